"""The shared test stack's state dir is its owner's only wherever it holds a secret, a password or
logs, from its first start on; an older state dir left open is tightened by what `up` does, and
PostgreSQL (run as the ``postgres`` user when root starts it) still starts through it."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from cinestream.local import modes
from cinestream.local.postgres import LocalPostgres, server_gid
from cinestream.settings import Settings
from cinestream.store.connection import connect
from tests.shared_stack import TEST_STATE

pytestmark = pytest.mark.integration


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _assert_private(settings: Settings) -> None:
    gid = server_gid(settings)
    # 0700; 0710 with the server's group when root runs PostgreSQL as `postgres` (it must pass
    # through to its data directory and its log file; it cannot list either directory).
    passed = 0o700 if gid is None else 0o710
    for folder in (TEST_STATE, settings.log_dir):
        assert _mode(folder) == passed, folder
        if gid is not None:
            assert folder.stat().st_gid == gid, folder
    assert _mode(TEST_STATE / "secrets") == 0o700
    for name in ("kafka.log", "postgres.log"):
        assert _mode(settings.log_dir / name) == 0o600, name
    assert modes.loose_paths(TEST_STATE, gid) == []


def test_the_test_stack_keeps_its_secrets_and_logs_to_its_owner(stack: dict[str, str]) -> None:
    _assert_private(Settings())


def test_an_older_open_state_dir_is_tightened_and_postgres_restarts_through_it(
    stack: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    from cinestream.local.stack import secure_state_dir

    settings = Settings()
    logs = settings.log_dir
    # As an older cinestream left it (measured after `make up`): 0755 directories, 0644 files.
    opened = {
        TEST_STATE: 0o755,
        logs: 0o755,
        logs / "kafka.log": 0o644,
        logs / "postgres.log": 0o644,
        TEST_STATE / "secrets": 0o755,
        TEST_STATE / "secrets" / "postgres_password": 0o644,
    }
    for path, mode in opened.items():
        if os.geteuid() == 0 and path.is_dir():
            os.chown(path, -1, 0)  # an older cinestream never gave them to postgres's group
        path.chmod(mode)
    assert len(modes.loose_paths(TEST_STATE, server_gid(settings))) == len(opened)

    caplog.set_level(logging.INFO, "cinestream.stack")
    tightened = secure_state_dir(settings)
    assert {t.path for t in tightened} == set(opened)
    logged = [r.getMessage() for r in caplog.records]
    for path, mode in opened.items():
        named = [line for line in logged if line.startswith(f"made private {path} (")]
        assert len(named) == 1 and f": {mode:o} -> " in named[0], (path, logged)
    assert modes.loose_paths(TEST_STATE, server_gid(settings)) == []

    # PostgreSQL stops and starts again through the tightened state dir (pg_ctl runs as
    # `postgres` when root starts it; `stop` does not say when pg_ctl failed: ask the pid file).
    server = LocalPostgres(settings)
    assert server.stop() and not server.running()
    server.start()
    with connect(settings.resolved_database_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _assert_private(settings)
