# Everything a newcomer or CI needs: `make test`, `make demo`, `make bench`, `make lint`; `make` lists them.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

DEMO_HOME ?= .airflow

.PHONY: help install test test-e2e lint demo demo-shell celery-demo bench bench-latency bench-celery bench-ledger emulator clean system-deps

help:
	@echo "make install   create .venv if missing and install the project with its dev extras (test, demo, ... do it first)"
	@echo "make test      create .venv if missing, install, run ruff and the test suite"
	@echo "make test-e2e  the slow end-to-end modules: whole Airflow deployments, demo, install, Celery"
	@echo "make lint      ruff (including the Airflow AIR rules)"
	@echo "make emulator  run the Altcraft API emulator on 127.0.0.1:8765"
	@echo "make bench     run the benchmarks, write docs/benchmarks.md (BENCH_N, BENCH_MILLION=1) and docs/benchmarks-ui.md"
	@echo "make bench-latency  only the latency of event-driven pipelines (a real Airflow, ~5 min)"
	@echo "make bench-ledger  only section 6 for LEDGER_BACKEND (e.g. mariadb), into docs/benchmarks.md"
	@echo "make bench-celery  only its section 5: throughput with 1 and 2 Celery workers (BENCH_CELERY_N)"
	@echo "make demo      Airflow + emulator + a SQLite CRM; backfills the demo pipeline (docs/demo.md)"
	@echo "make demo-shell  a shell whose airflow CLI talks to the running demo"
	@echo "make celery-demo  CeleryExecutor, 2 workers, Redis, PostgreSQL: 7-day backfill of 100k contacts"
	@echo "make clean     remove .venv and local Airflow state"

# mysqlclient (a dependency of the MySQL provider) compiles against the MariaDB client headers.
system-deps:
	@pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config >/dev/null; \
	  else \
	    echo "Install the MariaDB/MySQL client headers first (Debian: apt-get install libmariadb-dev pkg-config)"; exit 1; \
	  fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python system-deps
	$(BIN)/python -m pip install -q --upgrade uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev]"
	@# the editable build leaves a second copy of the metadata on sys.path (plugins/): Airflow would load
	@# the altcraft_webhooks plugin twice and report the second as a plugin import error
	rm -rf plugins/*.egg-info
	@touch $(STAMP)

install: $(STAMP)

# End-to-end modules that start whole Airflow deployments (7 to 25 minutes each): `make test-e2e` runs them,
# so that `make test` stays within its 20 minutes.
E2E_PENDING := tests/e2e/test_pipelines.py tests/e2e/test_demo.py tests/e2e/test_install.py \
	tests/e2e/test_celery.py

test: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/python -m pytest $(addprefix --ignore=,$(E2E_PENDING)) \
		$(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest $(E2E_PENDING) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff check --select AIR plugins dags
	$(BIN)/ruff format --check

# Runs until Ctrl-C (DEMO_KEEP_RUNNING=0: exits after the summary); state in .airflow/, see docs/demo.md.
demo: $(STAMP)
	$(BIN)/python -m demo.run

# The Airflow CLI against the demo's Airflow (its env.sh is written when the demo starts).
demo-shell:
	@test -f "$(DEMO_HOME)/env.sh" || { echo "No $(DEMO_HOME)/env.sh: start the demo first (make demo)"; exit 1; }
	@echo "The airflow CLI here uses the demo's Airflow ($(DEMO_HOME)); exit to leave." >&2
	@. "$(DEMO_HOME)/env.sh" && exec "$${SHELL:-/bin/bash}"

# Fresh PostgreSQL databases and Redis queue, removed afterwards; see docs/scaling.md (CELERY_DEMO_N=100000).
celery-demo: $(STAMP)
	$(BIN)/python -m demo.celery_demo

# Throughput, memory, rate limiting, parse and import time; see bench/run.py for the BENCH_* variables.
# Then the Altcraft page's response times over 1M ledger outcomes (bench/ui_pages.py; starts an API server).
bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.celery
	flock /tmp/altcraft-e2e.lock $(BIN)/python -m bench.ui_pages

# Poll and webhook pipelines vs a schedule, with a real Airflow; rewrites its section of docs/benchmarks.md.
bench-latency: $(STAMP)
	$(BIN)/python -m bench.latency

# Only section 6's row of one ledger backend (LEDGER_BACKEND=mariadb), put into docs/benchmarks.md's results.
bench-ledger: $(STAMP)
	$(BIN)/python -m bench.run --ledger-only $(LEDGER_BACKEND)

# Only section 5 of docs/benchmarks.md: 1 vs 2 Celery workers (BENCH_CELERY_N=100000).
bench-celery: $(STAMP)
	$(BIN)/python -m bench.celery

emulator: $(STAMP)
	$(BIN)/python -m altcraft.emulator --host 127.0.0.1 --port 8765

clean:
	rm -rf $(VENV) .airflow
