PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VENV_VERL ?= .venv-verl
PIP_INSTALL := $(BIN)/python -m pip install --constraint constraints.txt

.PHONY: install install-llm install-verl serve test clean

# The stamp makes a second `make` skip the install unless pyproject.toml changed.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# llama-cpp-python compiles from source (minutes, once: pip caches the wheel).
# A native build uses CPU features some virtual machines report but do not
# enable, and crashes there, so it is built for a portable instruction set.
# When the build fails, the tests marked `llm` are skipped with the reason.
$(VENV)/.installed-llm: $(VENV)/.installed
	@if CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP_INSTALL) -e '.[test,llm]'; then touch $@; \
	else echo "warning: the llm extra failed to install; tests marked llm will be skipped" >&2; fi

install-llm: $(VENV)/.installed-llm

# verl 0.9.1 needs transformers<5.11, older than the one the main venv resolves,
# so the verl plug-in and its tests get a second venv with the project and the
# test extra. When the install fails, `make test` skips the tests marked `verl`.
$(VENV_VERL)/.installed: pyproject.toml constraints.txt
	@if $(PYTHON) -m venv $(VENV_VERL) \
		&& $(VENV_VERL)/bin/python -m pip install --constraint constraints.txt --upgrade pip \
		&& $(VENV_VERL)/bin/python -m pip install --constraint constraints.txt -e '.[test,verl]'; then touch $@; \
	else echo "warning: the verl venv failed to install; tests marked verl will not run" >&2; fi

install-verl: $(VENV_VERL)/.installed

serve: install
	$(BIN)/ascl serve

test: install install-llm install-verl
	$(BIN)/python -m pytest
	@if [ -f $(VENV_VERL)/.installed ]; then $(VENV_VERL)/bin/python -m pytest -m verl tests/trainer; \
	else echo "the tests marked verl did not run: $(VENV_VERL) is not installed (make install-verl)"; fi

clean:
	rm -rf $(VENV) $(VENV_VERL)
