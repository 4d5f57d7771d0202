# Two commands on a fresh machine: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint pytest bench load chaos clean system-packages
# Debian packages the tests run for real: Prometheus (and its promtool).
DEBIAN_PACKAGES := prometheus

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

system-packages:  ## apt-get what is missing (as root; elsewhere, says what to install)
	@missing=""; for p in $(DEBIAN_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y --no-install-recommends $$missing >/dev/null \
	    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends $$missing >/dev/null; }; \
	  else echo "install the Debian packages:$$missing (the tests need them)"; exit 1; fi; \
	fi

pytest: $(BIN)/.installed system-packages
	$(BIN)/pytest

bench: $(BIN)/.installed  ## Print the benchmark table.
	$(BIN)/python -m bench $(ARGS)

load: $(BIN)/.installed  ## Minutes of mixed traffic: fails on a 5xx, lag or growing memory.
	$(BIN)/python -m bench.load $(ARGS)

chaos: $(BIN)/.installed  ## Mixed traffic while PostgreSQL and the API are killed; then a check.
	$(BIN)/python -m bench.chaos $(ARGS)

clean:
	rm -rf $(VENV) .data
