"""Fixtures every test directory sees: a local SparkSession for the transform tests (no
services) and the shared test stack (tests/shared_stack.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# One registration of the shared stack's fixtures for tests/integration and tests/dags: a second
# (a conftest importing them again) would be a second session-scoped stack.
from tests.shared_stack import pipeline, stack  # noqa: F401

# Airflow is imported by some unit tests; keep its home out of the user's ~/airflow.
os.environ.setdefault(
    "AIRFLOW_HOME",
    str(os.path.join(os.path.dirname(__file__), "..", ".state-test", "airflow-unit")),
)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    from cinestream.stream.submit import python_env

    for key, value in python_env().items():
        os.environ.setdefault(key, value)

    session = (
        SparkSession.builder.master("local[2]")
        .appName("cinestream-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.log.structuredLogging.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
