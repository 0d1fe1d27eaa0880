"""Helpers of the tests that start a stack of their own through the CLI, as a newcomer does
(tests/dags/test_live_platform.py, tests/cluster/test_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


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
