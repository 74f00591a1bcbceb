# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run console test lint typecheck bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/reelwright run

console: $(VENV)/.installed-run
	$(BIN)/reelwright console

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bot services connectors tests bench
	$(BIN)/ruff format --check bot services connectors tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: $(VENV)/.installed-dev lint typecheck
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_story.py

docs: $(VENV)/.installed-run
	$(BIN)/python -m bot.settings_docs

clean:
	rm -rf $(VENV) build *.egg-info
