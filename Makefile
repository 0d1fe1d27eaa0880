# cinestream: `make up` runs the pipeline on the embedded local stack, `make test` runs every test,
# `make test-fast` (everyday) every test that needs no service.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
# Spark's classes archived for the tests' cold drivers (tests/spark_cds.py); remade with the venv,
# the warm-up job or the JDK (a JVM of another build would skip the archive, with a warning).
SPARK_CDS := $(VENV)/share/cinestream/spark-cds.jsa
JAVA_BIN  := $(shell readlink -f "$$(command -v java)" 2>/dev/null)

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

$(SPARK_CDS): $(STAMP) tests/spark_cds.py $(JAVA_BIN)
	-$(PY) tests/spark_cds.py $(SPARK_CDS)

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

test-fast: $(STAMP) $(SPARK_CDS)
	$(BIN)/pytest $(FAST_TESTS)

# The fast tier first; only when it passed, every test that needs services in ONE pytest on three
# xdist workers (`--dist loadgroup`): each worker starts its own shared test stack (Kafka and
# PostgreSQL, slot 0/1/2) when its first test needs one, and the tests that start stacks of their
# own (the cluster profile, the live platform) or share Airflow's database stay together on one
# worker (tests/conftest.py). Most of a service test's time is waiting (JVM start-up, a broker
# or a watermark), so three workers share two cores well.
TEST_WORKERS ?= 3
test: test-fast
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 \
		tests/cluster tests/dags tests/integration --ignore=tests/dags/test_dag_integrity.py

test-integration: $(STAMP) $(SPARK_CDS)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src tests spark_jobs bench dags plugins expectations
	$(BIN)/ruff format --check src tests spark_jobs bench dags plugins expectations
	$(BIN)/mypy

bench: bench-pipeline bench-api bench-airflow bench-freshness

# cinestream's drain side by side with the naive Spark and the Flink SQL peers, all whole cold
# processes on the same topic, interleaved, best of BENCH_ROUNDS (bench/bench_side_by_side.py);
# then the generator, Spark's ceiling and the warm drain (bench/bench_pipeline.py). A quick check:
# make bench-pipeline BENCH_COUNT=50000 BENCH_ROUNDS=1
BENCH_COUNT ?= 1000000
BENCH_ROUNDS ?= 2
bench-pipeline: $(STAMP)
	$(PY) bench/bench_side_by_side.py --count $(BENCH_COUNT) --rounds $(BENCH_ROUNDS)
	$(PY) bench/bench_pipeline.py --count $(BENCH_COUNT)

bench-api: $(STAMP)
	$(PY) bench/bench_api.py

bench-airflow: $(STAMP)
	$(PY) bench/bench_airflow_pipeline.py

bench-freshness: $(STAMP)
	$(PY) bench/bench_freshness.py

clean: down
	rm -rf .state .state-* $(VENV)
