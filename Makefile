# Fresh clone → `make run` or `make test`; both bootstrap .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080

.PHONY: run test lint typecheck unit bench clean definitions settings-docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway db upgrade
	$(BIN)/gateway clients demo --url http://127.0.0.1:$(PORT)
	# The demo client acts region-wide (like the region's own journal system), so it sees what it writes.
	# Tokens' issuer and audience come from the base URL (never the Host header): where this serves.
	GATEWAY_BASE_URL=$${GATEWAY_BASE_URL:-http://127.0.0.1:$(PORT)/fhir} \
	GATEWAY_REGION_CLIENTS=$${GATEWAY_REGION_CLIENTS:-demo-client} \
	$(BIN)/gateway serve --host 127.0.0.1 --port $(PORT) --no-upgrade

lint: $(STAMP)
	$(BIN)/ruff check gateway tests scripts bench
	$(BIN)/ruff format --check gateway tests scripts bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -n 2

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench.run

definitions: $(STAMP)
	$(BIN)/python scripts/extract_definitions.py

# The table of environment variables in docs/operations.md, from gateway/config.py (a test checks it)
settings-docs: $(STAMP)
	$(BIN)/python -m gateway.config_docs --write

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
