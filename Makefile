# `make run` and `make test` set up .venv on first use, then run the default job / the tests.
# TORCH: the torch requirement installed before symprune (these machines carry a CPU build of
# 2.13.0 on disk; on a CUDA machine use e.g. TORCH="torch>=2.4,<2.15").
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTHON ?= python3
ASSETS_DEFAULT := $(wildcard $(abspath ../shared/assets))
export SYMPRUNE_ASSETS ?= $(ASSETS_DEFAULT)

.PHONY: setup run test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install "$(TORCH)"
	$(VENV)/bin/python -m pip install -e ".[test]"
	touch $@

run: setup
	$(VENV)/bin/symprune $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)
