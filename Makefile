# Quick start:  make demo   (set up, then run the main job on the built-in defaults)
#               make test   (set up, then run the test suite)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build that a fresh machine of this kind has on disk; on a GPU machine use
# e.g. `make setup TORCH=torch==2.13.0 CONSTRAINTS=` to take the CUDA build instead.
TORCH ?= torch==2.13.0
CONSTRAINTS ?= -c constraints.txt
EXTRAS ?= dev,train

.PHONY: setup test test-all lint demo bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

test: setup
	$(PY) -m ruff check capscale tests benchmarks
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "slow or not slow"

lint: setup
	$(PY) -m ruff check capscale tests benchmarks

demo: setup
	$(VENV)/bin/capscale demo -o capscale-demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
