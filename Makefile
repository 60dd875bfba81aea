# README's two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo demo-network portal test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# the portal on http://127.0.0.1:8080 (make demo prints the demo logins)
portal: $(STAMP)
	$(BIN)/campflow portal

demo-network: $(STAMP)
	$(BIN)/python examples/demo_network.py

# two workers (pytest-xdist), each with its own database and Prefect test server; a file's tests stay together
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# the layers point one way (.importlinter, docs/architecture.md) and the code is clean
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .

clean:
	-[ -x $(BIN)/campflow ] && env -u CAMPFLOW_DATABASE_URL $(BIN)/campflow db stop
	rm -rf $(VENV) .campflow
