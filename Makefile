# talkserve: `make demo` installs everything and runs one real job; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo up test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Generated stubs and face models are build output: made here, never committed.
install: $(STAMP)
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/python -m scripts.fetch_models

demo: install
	$(BIN)/talkserve demo

up: install
	$(BIN)/talkserve up

test: install
	$(BIN)/python -m pytest -q

# buf (the protos), ruff and mypy (services/ and libs/), all configured in the repository.
lint: install
	$(BIN)/buf lint
	$(BIN)/ruff check services libs scripts
	$(BIN)/mypy

bench: install
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) gen models out .talkserve
