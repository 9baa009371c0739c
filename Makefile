# GCE Lab. Two commands matter on a fresh machine: `make run` and `make test`.
# Each one creates/updates the virtual environment in .venv with what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test

.PHONY: run test lint unit bench clean-venv demo

$(RUN_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(TEST_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

## make run: start the lab on the embedded digits data set.
run: $(RUN_STAMP)
	$(BIN)/python -m gce_core compare --preset quick --dataset digits --noise uniform --noise-rate 0.4

## make test: lint, then the whole test suite.
test: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

bench: $(RUN_STAMP)
	$(BIN)/python -m bench.run_all

clean-venv:
	rm -rf $(VENV)
