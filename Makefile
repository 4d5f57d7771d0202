# Two commands on a fresh machine: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint pytest bench load chaos clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed  ## Serve the API on the embedded PostgreSQL.
	$(BIN)/authledger serve

test: lint pytest  ## Lint, type-check and run the whole test suite.

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: $(BIN)/.installed
	$(BIN)/pytest

bench: $(BIN)/.installed  ## Print the benchmark table.
	$(BIN)/python -m bench $(ARGS)

load: $(BIN)/.installed  ## Minutes of mixed traffic: fails on a 5xx, lag or growing memory.
	$(BIN)/python -m bench.load $(ARGS)

chaos: $(BIN)/.installed  ## Mixed traffic while PostgreSQL and the API are killed; then a check.
	$(BIN)/python -m bench.chaos $(ARGS)

clean:
	rm -rf $(VENV) .data
