"""The local stack's roles on the real PostgreSQL: least privilege, secrets kept private."""

from __future__ import annotations

import logging
import stat
import threading

import psycopg
import pytest

from cinestream.store import schema
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


def _hold(url: str, statement: str):  # type: ignore[no-untyped-def]
    """A second session inside an open transaction that took ``statement``'s table lock, the
    way a processor's commit holds window_state between its statements."""
    conn = psycopg.connect(url)
    conn.execute(statement)
    return conn


def test_a_store_at_this_schema_needs_no_table_lock_to_start_a_command(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backfill starting while the stream commits used to run every CREATE/ALTER again; its
    # ALTER TABLE waited for the commit's row lock while the commit waited for the DDL's: a
    # deadlock that failed the backfill (CI, 2026-11-30). One try with a short wait: any DDL
    # here fails with LockNotAvailable instead of passing.
    monkeypatch.setattr(schema, "SCHEMA_ATTEMPTS", 1)
    monkeypatch.setattr(schema, "SCHEMA_LOCK_TIMEOUT", "300ms")
    url = pipeline.settings.resolved_database_url
    holder = _hold(url, "LOCK TABLE window_state, processor_lock IN ROW EXCLUSIVE MODE")
    try:
        with psycopg.connect(url, options="-c lock_timeout=2s") as conn:
            schema.ensure_schema(conn)
            (digest,) = conn.execute("SELECT digest FROM cinestream_schema").fetchone() or (None,)
        assert digest is not None and digest.startswith(schema.SCHEMA_DIGEST)
    finally:
        holder.close()


def test_a_schema_change_gives_way_to_a_running_commit_and_then_applies(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(schema, "SCHEMA_LOCK_TIMEOUT", "200ms")
    url = pipeline.settings.resolved_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE cinestream_schema SET digest = 'an older release'")
    holder = _hold(url, "LOCK TABLE window_state IN ROW EXCLUSIVE MODE")
    release = threading.Timer(1.5, holder.close)
    release.start()
    try:
        with caplog.at_level(logging.WARNING, logger="cinestream.store.schema"):
            with psycopg.connect(url) as conn:
                schema.ensure_schema(conn)
                (digest,) = conn.execute("SELECT digest FROM cinestream_schema").fetchone() or (
                    None,
                )
    finally:
        release.join()
    assert digest is not None and digest.startswith(schema.SCHEMA_DIGEST)
    assert "gave way to a running transaction" in caplog.text


def test_a_store_at_this_digest_missing_a_table_is_brought_up_again(pipeline: Pipeline) -> None:
    url = pipeline.settings.resolved_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE backfill_runs")
        schema.ensure_schema(conn)
        assert conn.execute("SELECT to_regclass('backfill_runs')").fetchone() != (None,)
