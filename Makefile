# Everything a newcomer or CI needs: `make test`, `make demo`, `make bench`, `make lint`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install test lint demo celery-demo bench bench-celery emulator clean system-deps

help:
	@echo "make test      create .venv if missing, install, run the test suite"
	@echo "make lint      ruff (including the Airflow AIR rules)"
	@echo "make emulator  run the Altcraft API emulator on 127.0.0.1:8765"
	@echo "make bench     run the benchmarks, write docs/benchmarks.md (BENCH_N, BENCH_MILLION=1)"
	@echo "make bench-celery  only its section 5: throughput with 1 and 2 Celery workers (BENCH_CELERY_N)"
	@echo "make demo      Airflow + emulator + a SQLite CRM; backfills the demo pipeline (docs/demo.md)"
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
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff check --select AIR plugins dags

# Runs until Ctrl-C (DEMO_KEEP_RUNNING=0: exits after the summary); state in .airflow/, see docs/demo.md.
demo: $(STAMP)
	$(BIN)/python -m demo.run

# Fresh PostgreSQL databases and Redis queue, removed afterwards; see docs/scaling.md (CELERY_DEMO_N=100000).
celery-demo: $(STAMP)
	$(BIN)/python -m demo.celery_demo

# Throughput, memory, rate limiting, parse and import time; see bench/run.py for the BENCH_* variables.
bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.celery

# Only section 5 of docs/benchmarks.md: 1 vs 2 Celery workers (BENCH_CELERY_N=100000).
bench-celery: $(STAMP)
	$(BIN)/python -m bench.celery

emulator: $(STAMP)
	$(BIN)/python -m altcraft.emulator --host 127.0.0.1 --port 8765

clean:
	rm -rf $(VENV) .airflow
