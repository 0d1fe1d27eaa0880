"""Connections to the PostgreSQL store: opening one, retrying while it is down, and the one rule
every writer follows (it commits its own transaction)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from cinestream.errors import ServiceUnavailable, first_line
from cinestream.net import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

# Transaction-level advisory locks. STORE_LOCK serialises the stream's commits with backfills
# (both rewrite the same windows); SCHEMA_LOCK serialises concurrent ``ensure_schema`` calls.
STORE_LOCK = 0x63696E65  # "cine"
SCHEMA_LOCK = STORE_LOCK + 1
# Serialises publishing to the metrics topic, so the last record per key is the newest row.
PUBLISH_LOCK = STORE_LOCK + 2
# How long a writer waits for a lock before its transaction fails (and is retried by the
# caller): a writer stuck behind a hung session must say so, not wait forever.
WRITER_LOCK_TIMEOUT = "60s"


def begin_writer(conn: psycopg.Connection[Any]) -> None:
    """First statements of a writer's transaction: a lock timeout, then the store lock."""
    conn.execute(f"SET LOCAL lock_timeout = '{WRITER_LOCK_TIMEOUT}'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (STORE_LOCK,))


def connect(url: str, *, autocommit: bool = False, timeout: int = 5) -> psycopg.Connection[Any]:
    """Open a connection, or raise :class:`ServiceUnavailable` naming the database."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        where = redact_url(url)
        raise ServiceUnavailable(
            f"PostgreSQL at {where} is unavailable ({first_line(exc)}); start it with "
            "`cinestream up` or set CINESTREAM_DATABASE_URL"
        ) from exc


def reachable(url: str, timeout: int = 2) -> bool:
    """True when PostgreSQL at ``url`` accepts a connection."""
    try:
        connect(url, timeout=timeout).close()
        return True
    except ServiceUnavailable:
        return False


def one(
    conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> tuple[Any, ...]:
    """The single row an aggregate query returns."""
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    if row is None:
        raise RuntimeError(f"query returned no row: {sql}")
    return tuple(row)


def retry_on_disconnect(
    action: Callable[[], T], *, timeout_s: float, what: str, sleep_s: float = 2.0
) -> T:
    """Run ``action``, retrying while PostgreSQL is unreachable, for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            return action()
        except (psycopg.OperationalError, ServiceUnavailable) as exc:
            if not getattr(exc, "retryable", True):
                raise  # refused (Kafka's authorizer), not unreachable: waiting does not help
            attempt += 1
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"{what}: PostgreSQL still unavailable after {timeout_s:.0f}s ({exc})"
                ) from exc
            log.warning(
                "%s: PostgreSQL unavailable (%s); retry %d in %.0fs",
                what,
                first_line(exc),
                attempt,
                sleep_s,
            )
            time.sleep(sleep_s)


def require_no_open_transaction(conn: psycopg.Connection[Any], what: str) -> None:
    """Writers commit their own transaction. Called inside an open one, ``conn.transaction()``
    would only make a savepoint and the batch would not be committed when the writer returns."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError(
            f"{what} needs a connection with no open transaction (found "
            f"{conn.info.transaction_status.name}); use autocommit or commit first"
        )
