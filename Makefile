PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --constraint constraints.txt

.PHONY: install serve test clean

# The stamp makes a second `make` skip the install unless pyproject.toml changed.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[test]'
	touch $@

install: $(VENV)/.installed

serve: install
	$(BIN)/ascl serve

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
