# FunnelPulse: every target sets up its own .venv, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORE_STAMP := $(VENV)/.core
WAREHOUSE ?= ./warehouse

.PHONY: demo test test-fast lint layers bench clean test-deps screenshots

# The demo needs only the core install (DuckDB engine, no pyspark, streamlit or Kafka client);
# the tests need every extra.
$(CORE_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(CORE_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,all]'
	touch $(STAMP) $(CORE_STAMP)

demo: $(CORE_STAMP)
	$(BIN)/funnelpulse --warehouse $(WAREHOUSE) demo

# System tools the tests use: Debian's chromium for the browser tests (never a downloaded
# browser), shellcheck for the deploy script, psql (postgresql-client) and the PostgreSQL JDBC
# driver (libpostgresql-jdbc-java) for the SQL server and a real Alertmanager for the
# alertmanager sink.
# Java 17 is expected for the Spark tests.
test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	command -v psql >/dev/null 2>&1 || missing="$$missing postgresql-client"; \
	[ -f /usr/share/java/postgresql.jar ] || missing="$$missing libpostgresql-jdbc-java"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# Test files run in parallel, one worker per core, each file whole on one worker: a file's broker,
# built warehouses and Spark session are set up once, and files never share a warehouse.
PARALLEL ?= -n auto --dist loadfile

test: $(STAMP) test-deps layers
	$(BIN)/python -m pytest -q $(PARALLEL) --durations=30

# The edit loop: no Spark, no broker, no browser, no fault injection, nothing marked slow.
test-fast: $(STAMP) test-deps
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not spark and not kafka and not browser and not faults and not slow"

lint: $(STAMP) layers
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy src

# Layers (import-linter contracts in pyproject.toml) and cycles (imports inside functions count):
# a few seconds, so `make test` runs them too.
layers: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python scripts/import_cycles.py

# The README's dashboard screenshots (docs/*.png), made from the current pages in chromium.
screenshots: $(STAMP) test-deps
	$(BIN)/python scripts/screenshots.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_batch.py

clean:
	rm -rf $(VENV) $(WAREHOUSE) .pytest_cache .import_linter_cache
