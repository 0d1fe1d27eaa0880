"""The local stack's roles on the real PostgreSQL: least privilege, secrets kept private."""

from __future__ import annotations

import stat

import psycopg
import pytest

from tests.integration.conftest import TEST_STATE, Pipeline

pytestmark = pytest.mark.integration


def test_the_application_role_is_not_a_superuser(pipeline: Pipeline) -> None:
    (row,) = pipeline.db(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    assert row == (False, False)
    # ... and still owns what it writes: its commits, locks and notifications work.
    assert pipeline.db("SELECT pg_try_advisory_xact_lock(42)") == [(True,)]
    pipeline.db("SELECT pg_notify('cinestream_store_changed', 'window_metrics')")


def test_the_read_only_role_cannot_lock_notify_or_write(pipeline: Pipeline) -> None:
    url = pipeline.settings.resolved_api_database_url
    for statement in (
        "SELECT pg_try_advisory_lock(1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_notify('cinestream_store_changed', 'window_metrics')",
        "DELETE FROM window_metrics",
        "SELECT count(*) FROM dlq_outbox",  # raw invalid payloads are not the API's
    ):
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(url) as conn:  # reading is what it is for
        assert conn.execute("SELECT count(*) FROM window_metrics").fetchone() == (0,)


def test_passwords_never_lie_around_readable(pipeline: Pipeline) -> None:
    secrets = TEST_STATE / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    files = list(secrets.iterdir())
    assert any(f.name == "postgres_postgres_password" for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not (TEST_STATE / "postgres" / ".pwfile").exists()
