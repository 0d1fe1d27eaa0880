"""Fixtures for the DAG tests: Airflow's environment on the test stack's PostgreSQL.

``stack`` and ``pipeline`` come from tests/conftest.py: the same session stack as tests/integration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
# The directory of this worker's warm-driver client, named spark-submit (tests/warm_driver.py),
# put first on the PATH of the Airflow commands once ``airflow_db`` is up: the Spark jobs of
# `airflow dags test` (SparkSubmitHook runs spark-submit from PATH) then run warm too when the
# hook asks for the driver the warm one is.
_warm_bin: list[str] = []


def airflow_run(
    *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    from cinestream.local.airflow import airflow_env
    from cinestream.settings import Settings

    full_env = {**os.environ, **airflow_env(Settings()), **(env or {})}
    if _warm_bin:
        full_env["PATH"] = f"{_warm_bin[0]}:{full_env['PATH']}"
    return subprocess.run(
        [AIRFLOW, *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def airflow_db(stack: dict[str, str], warm_driver: Path | None) -> Iterator[None]:
    result = airflow_run("db", "migrate", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    _warm_bin[:] = [str(warm_driver.parent)] if warm_driver else []
    try:
        yield
    finally:
        _warm_bin.clear()
