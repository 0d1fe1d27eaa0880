"""Helpers of the tests that start a stack of their own through the CLI, as a newcomer does
(tests/dags/test_live_platform.py, tests/cluster/test_cluster.py)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``cinestream ARGS`` with ``env`` over this process's environment; stdout and stderr
    together in ``stdout``."""
    return subprocess.run(
        [sys.executable, "-m", "cinestream.cli", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = 300, every: float = 2) -> Any:
    """``check()``'s first truthy value, asked every ``every`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


@contextmanager
def one_start_at_a_time() -> Iterator[None]:
    """Held while a stack of its own starts. The cluster profile's and the live platform's `up`
    each start brokers, PostgreSQL, an Airflow and their first Spark jobs; started at the same
    moment on the test workers' two cores (load average 20+), Airflow's api-server answered
    tasks too late and `up` ran past its timeout. They take turns instead (a lock file shared
    by the pytest-xdist workers); the tests after the starts still run side by side."""
    fd = os.open(REPO / ".state-test-starting.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
