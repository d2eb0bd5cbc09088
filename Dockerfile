# The ASCL rule service on CPU, with the bundled model and a prebuilt index.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install --yes --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 ascl

WORKDIR /app
COPY . .

# PyPI's Linux torch wheels are CUDA builds; the PyTorch CPU index serves
# torch==2.13.0+cpu, which pip prefers for the pinned version.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same install step that .ci/run runs through `make test`.
RUN make install VENV=/opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    ASCL_HOST=0.0.0.0 \
    ASCL_PORT=8000 \
    ASCL_CORPUS_DIR=/app/corpus/rulesets \
    ASCL_INDEX_DIR=/app/index \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# Bake the index into the image so the container is ready in seconds. A
# mounted corpus that differs is detected by the manifest and re-indexed.
RUN ascl index build && chown -R ascl:ascl /app/index

USER ascl
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["ascl", "serve"]
