# cinestream: `make up` runs the pipeline on the embedded local stack, `make test` runs every test,
# `make test-fast` (everyday) every test that needs no service.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up up-cluster down test test-fast test-integration lint bench bench-pipeline bench-api bench-airflow \
	bench-freshness \
	install clean status doctor lock

# Dependencies come from requirements.lock (every package pinned); `make lock` refreshes it
# from pyproject.toml after a dependency change there.
$(STAMP): pyproject.toml requirements.lock
	@bash infra/install-system-deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	$(PY) -c "from cinestream.jars import jars; jars('kafka'); jars('spark'); jars('hadoop')"
	bash infra/docs-assets/fetch.sh $(VENV)/share/cinestream/docs-assets
	@touch $(STAMP)

install: $(STAMP)

lock:
	@test -x $(PY) || python3 -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra airflow --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu --quiet -o requirements.lock

up: $(STAMP)
	$(BIN)/cinestream up

up-cluster: $(STAMP)
	$(BIN)/cinestream up --cluster

down:
	@if [ -x $(BIN)/cinestream ]; then $(BIN)/cinestream down; fi

status: $(STAMP)
	$(BIN)/cinestream status

doctor: $(STAMP)
	$(BIN)/cinestream doctor

# The everyday tier: every test that needs no service (tests/unit, the DAG-integrity checks).
FAST_TESTS := tests/unit tests/dags/test_dag_integrity.py

test-fast: $(STAMP)
	$(BIN)/pytest $(FAST_TESTS)

# Tiers in order, each only after the one before passed (make stops at the first failing line):
# the fast tier; tests/integration then tests/dags in ONE pytest, because they share one session
# stack (started once; tests/conftest.py stops before tests/dags when tests/integration failed);
# tests/cluster, whose stack is its own. Every path holds tests (a tier that collected none would
# exit 5, which make takes as a failure: it could not pass unseen).
test: test-fast
	$(BIN)/pytest --durations=25 tests/integration tests/dags --ignore=tests/dags/test_dag_integrity.py
	$(BIN)/pytest --durations=25 tests/cluster

test-integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests spark_jobs bench dags plugins expectations
	$(BIN)/ruff format --check src tests spark_jobs bench dags plugins expectations
	$(BIN)/mypy

bench: bench-pipeline bench-api bench-airflow bench-freshness

bench-pipeline: $(STAMP)
	$(PY) bench/bench_pipeline.py

bench-api: $(STAMP)
	$(PY) bench/bench_api.py

bench-airflow: $(STAMP)
	$(PY) bench/bench_airflow_pipeline.py

bench-freshness: $(STAMP)
	$(PY) bench/bench_freshness.py

clean: down
	rm -rf .state .state-* $(VENV)
