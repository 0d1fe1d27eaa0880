"""The store's schema: tables, the change notifications the API listens to, roles and grants.

Window tables key windows by ``(window_type, window_start_ms bigint)``; ``window_metrics`` keeps
the SPEC's ``timestamptz`` columns for the people and tools that query it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

import psycopg
from psycopg import sql

from cinestream.errors import CinestreamError
from cinestream.store.connection import SCHEMA_LOCK, begin_writer

log = logging.getLogger(__name__)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS window_metrics (
    window_start    timestamptz      NOT NULL,
    window_end      timestamptz      NOT NULL,
    window_type     text             NOT NULL,
    count           bigint           NOT NULL,
    avg_rating      double precision NOT NULL,
    p50_rating      double precision NOT NULL,
    p95_rating      double precision NOT NULL,
    top_movies      text             NOT NULL,
    processing_time timestamptz      NOT NULL,
    PRIMARY KEY (window_type, window_start)
);
CREATE INDEX IF NOT EXISTS window_metrics_start_idx ON window_metrics (window_start);

-- Exact aggregates a window's metrics are derived from (half stars 1..10 = ratings 0.5..5.0).
CREATE TABLE IF NOT EXISTS window_rating_counts (
    window_type     text     NOT NULL,
    window_start_ms bigint   NOT NULL,
    half_stars      smallint NOT NULL CHECK (half_stars BETWEEN 1 AND 10),
    count           bigint   NOT NULL,
    PRIMARY KEY (window_type, window_start_ms, half_stars)
);
CREATE TABLE IF NOT EXISTS window_movie_counts (
    window_type     text   NOT NULL,
    window_start_ms bigint NOT NULL,
    movie_id        bigint NOT NULL,
    count           bigint NOT NULL,
    PRIMARY KEY (window_type, window_start_ms, movie_id)
);
-- closed_by: NULL while the stream may still add to the window; 'watermark' or 'backfill' after.
CREATE TABLE IF NOT EXISTS window_state (
    window_type     text        NOT NULL,
    window_start_ms bigint      NOT NULL,
    window_end_ms   bigint      NOT NULL,
    closed_by       text,
    late_count      bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_type, window_start_ms)
);
CREATE TABLE IF NOT EXISTS processor_state (
    checkpoint     text PRIMARY KEY,
    topic          text        NOT NULL,
    topic_id       text,
    watermark_ms   bigint      NOT NULL DEFAULT 0,
    max_event_ms   bigint      NOT NULL DEFAULT 0,
    last_batch_id  bigint      NOT NULL DEFAULT -1,
    end_offsets    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    valid_total    bigint      NOT NULL DEFAULT 0,
    invalid_total  bigint      NOT NULL DEFAULT 0,
    late_total     bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS processor_batches (
    checkpoint      text        NOT NULL,
    batch_id        bigint      NOT NULL,
    end_offsets     jsonb       NOT NULL,
    valid           bigint      NOT NULL,
    invalid         bigint      NOT NULL,
    late            bigint      NOT NULL,
    windows_updated integer     NOT NULL,
    watermark_ms    bigint      NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (checkpoint, batch_id)
);
-- Added after the first release: created on stores that predate them.
-- future_count: ratings stamped beyond the future tolerance (counted, anchoring nothing).
ALTER TABLE window_state ADD COLUMN IF NOT EXISTS future_count bigint NOT NULL DEFAULT 0;
ALTER TABLE processor_state ADD COLUMN IF NOT EXISTS future_total bigint NOT NULL DEFAULT 0;
-- version: bumped whenever the window's metric changes; published_version: the last version
-- written to the metrics topic. A window with version > published_version is pending.
ALTER TABLE window_state ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
ALTER TABLE window_state ADD COLUMN IF NOT EXISTS published_version bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS window_state_unpublished_idx
    ON window_state (window_type, window_start_ms) WHERE version > published_version;
-- The fencing token of each checkpoint's lock: bumped by every processor that takes the lock
-- and checked inside every commit, so a processor that lost its lock cannot commit anything.
CREATE TABLE IF NOT EXISTS processor_lock (
    checkpoint     text PRIMARY KEY,
    token          bigint      NOT NULL,
    holder         text        NOT NULL,
    acquired_at    timestamptz NOT NULL DEFAULT now(),
    last_commit_at timestamptz
);
-- handed_off_batch: the batch the holder handed to its background commit. Spark marks a batch
-- done when the processor hands it off, before PostgreSQL has it: a processor that stops in
-- between leaves the checkpoint one batch ahead of the store, and the next start reads that one
-- batch again (the start plan tells this apart from a store that lost batches).
ALTER TABLE processor_lock ADD COLUMN IF NOT EXISTS handed_off_batch bigint;
-- What the store holds (cinestream.store.pipeline): the one ratings topic and window types it
-- belongs to, and per partition the end offset of everything committed, whichever checkpoint
-- committed it. Every stream commit must start there; a new or moved checkpoint resumes there.
CREATE TABLE IF NOT EXISTS pipeline (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ratings_topic   text        NOT NULL,
    topic_id        text,
    window_types    text        NOT NULL DEFAULT '',
    end_offsets     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    watermark_ms    bigint      NOT NULL DEFAULT 0,
    max_event_ms    bigint      NOT NULL DEFAULT 0,
    last_checkpoint text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- A store from before the pipeline row: its newest processor's offsets and the highest watermark.
INSERT INTO pipeline (ratings_topic, topic_id, end_offsets, watermark_ms, max_event_ms,
                      last_checkpoint)
SELECT topic, topic_id, end_offsets, (SELECT max(watermark_ms) FROM processor_state),
       (SELECT max(max_event_ms) FROM processor_state), checkpoint
FROM processor_state ORDER BY updated_at DESC LIMIT 1
ON CONFLICT DO NOTHING;
-- The query id of the checkpoint that committed a batch (Spark's checkpoint metadata): a
-- checkpoint recreated at the same location starts again at batch 0 with another id.
ALTER TABLE processor_batches ADD COLUMN IF NOT EXISTS query_id text;
ALTER TABLE processor_batches ADD COLUMN IF NOT EXISTS start_offsets jsonb;
-- The DLQ's outbox (cinestream.store.dlq_outbox): a batch's invalid records, committed with its
-- counts and deleted once published to the DLQ topic. Keyed by where each record is in the
-- ratings topic, so a replayed batch cannot enqueue one twice.
CREATE TABLE IF NOT EXISTS dlq_outbox (
    source_partition integer NOT NULL,
    source_offset    bigint  NOT NULL,
    key              bytea,
    value            bytea   NOT NULL,
    PRIMARY KEY (source_partition, source_offset)
);
-- Per DLQ topic: where it ended (per partition) after the outbox's last publication or read-back,
-- and whether a publication is in flight (set and committed before it starts, cleared with its
-- DELETE): one that a crash cut short left its records after these offsets.
CREATE TABLE IF NOT EXISTS dlq_publication (
    dlq_topic   text PRIMARY KEY,
    end_offsets jsonb       NOT NULL DEFAULT '{}'::jsonb,
    in_flight   boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS backfill_runs (
    id             bigserial PRIMARY KEY,
    range_start    timestamptz NOT NULL,
    range_end      timestamptz NOT NULL,
    windows        integer     NOT NULL,
    ratings        bigint      NOT NULL,
    skipped_open   integer     NOT NULL,
    finished_at    timestamptz NOT NULL DEFAULT now()
);
-- Reports of the checks Airflow runs (cinestream.store.reports), kept as history for the quality
-- view; `reset` keeps them (they describe what was checked, not what the topics hold).
-- One cinestream_audit step: the first audit of a range, or the re-audit of what it backfilled.
CREATE TABLE IF NOT EXISTS audit_runs (
    id           bigserial PRIMARY KEY,
    run_at       timestamptz NOT NULL DEFAULT now(),
    source       text        NOT NULL,
    phase        text        NOT NULL,
    range_start  timestamptz NOT NULL,
    range_end    timestamptz NOT NULL,
    ok           boolean     NOT NULL,
    windows      integer     NOT NULL,
    ratings      bigint      NOT NULL,
    differences  integer     NOT NULL,
    repair       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    lines        jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_runs_run_at_idx ON audit_runs (run_at);
-- One cinestream_dlq report: the DLQ records in [start_offsets, end_offsets) grouped by reason
-- and producer key, against the traffic the store counted since the previous report.
CREATE TABLE IF NOT EXISTS dlq_reports (
    id            bigserial PRIMARY KEY,
    run_at        timestamptz      NOT NULL DEFAULT now(),
    source        text             NOT NULL,
    dlq_topic     text             NOT NULL,
    topic_id      text,
    start_offsets jsonb            NOT NULL,
    end_offsets   jsonb            NOT NULL,
    invalid       bigint           NOT NULL,
    valid         bigint           NOT NULL,
    share         double precision NOT NULL,
    threshold     double precision NOT NULL,
    degraded      boolean          NOT NULL,
    counted       jsonb            NOT NULL,
    reasons       jsonb            NOT NULL,
    keys          jsonb            NOT NULL
);
CREATE INDEX IF NOT EXISTS dlq_reports_run_at_idx ON dlq_reports (run_at);
-- Each Great Expectations suite's result in a cinestream_quality run.
CREATE TABLE IF NOT EXISTS quality_runs (
    id          bigserial PRIMARY KEY,
    run_at      timestamptz NOT NULL DEFAULT now(),
    source      text        NOT NULL,
    suite       text        NOT NULL,
    success     boolean     NOT NULL,
    range_start text,
    range_end   text,
    failures    jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX IF NOT EXISTS quality_runs_run_at_idx ON quality_runs (run_at);
"""

# The local stack creates a read-only role for the API; elsewhere it may not exist.
_GRANT_READER_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cinestream_reader') THEN
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO cinestream_reader;
        -- Raw invalid payloads waiting for the DLQ are not the API's to read.
        REVOKE SELECT ON dlq_outbox FROM cinestream_reader;
    END IF;
END
$$;
"""

# Every change to the tables the API reads is announced on this channel when its transaction
# commits, so the API can keep answers until the data under them changes (cinestream.api.cache).
CHANGE_CHANNEL = "cinestream_store_changed"
API_TABLES = (
    "window_metrics",
    "window_rating_counts",
    "window_movie_counts",
    "window_state",
    "processor_state",
)
_NOTIFY_SQL = f"""
CREATE OR REPLACE FUNCTION cinestream_store_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANGE_CHANNEL}', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
""" + "".join(
    f"CREATE OR REPLACE TRIGGER store_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
    f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION cinestream_store_changed();\n"
    for table in API_TABLES
)

# Tables that `reset` empties (everything the pipeline derived from the topics).
DERIVED_TABLES = (
    "pipeline",
    "window_metrics",
    "window_rating_counts",
    "window_movie_counts",
    "window_state",
    "processor_state",
    "processor_batches",
    "processor_lock",
    "backfill_runs",
    "dlq_outbox",
    "dlq_publication",
)

SUPERUSER = "postgres"
APP_ROLE = "cinestream"
READER_ROLE = "cinestream_reader"
AIRFLOW_ROLE = "airflow"


# The schema a store was last brought up to: a digest of every statement ensure_schema runs
# (and whether the API's role existed to be granted). DDL takes table locks that wait for, and
# deadlock with, a committing processor; a store already at this digest needs none of it.
_SCHEMA_VERSION_SQL = """
CREATE TABLE IF NOT EXISTS cinestream_schema (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    digest     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""
SCHEMA_DIGEST = hashlib.sha256(
    (SCHEMA_SQL + _NOTIFY_SQL + _GRANT_READER_SQL + _SCHEMA_VERSION_SQL).encode()
).hexdigest()[:16]
# A schema change waits this long for the tables' locks, then gives way and tries again: a
# processor in the middle of a commit must not be stuck behind it (or deadlock with it).
SCHEMA_LOCK_TIMEOUT = "5s"
SCHEMA_ATTEMPTS = 12


def _wanted_digest(conn: psycopg.Connection[Any]) -> str:
    (reader,) = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", (READER_ROLE,)
    ).fetchone() or (False,)
    return SCHEMA_DIGEST + ("+reader" if reader else "")


# Every table the schema makes: a store at the right digest with one of them missing (dropped by
# hand, a partial restore) is brought up again rather than trusted.
_TABLES = tuple(dict.fromkeys(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA_SQL)))


def _applied_digest(conn: psycopg.Connection[Any]) -> str | None:
    (table,) = conn.execute("SELECT to_regclass('cinestream_schema')").fetchone() or (None,)
    if table is None:
        return None
    (missing,) = conn.execute(
        "SELECT count(*) FROM unnest(%s::text[]) AS t(name) WHERE to_regclass(t.name) IS NULL",
        (list(_TABLES),),
    ).fetchone() or (0,)
    if missing:
        return None
    row = conn.execute("SELECT digest FROM cinestream_schema").fetchone()
    return row[0] if row else None


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables, triggers and grants that are missing (idempotent, concurrency-safe).

    A store already at this release's schema is left alone: no DDL, no table lock, so a
    backfill or a `doctor` starting while the stream commits neither waits for nor deadlocks
    with it. A store that needs the DDL gets it under the schema and store locks (after any
    running commit), each table lock waited for briefly and the whole retried."""
    with conn.transaction():
        wanted = _wanted_digest(conn)
        if _applied_digest(conn) == wanted:
            return
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                if _applied_digest(conn) == wanted:
                    return
                # Writers take the store lock before any table: holding it, the DDL cannot
                # form a lock cycle with a commit (only wait, briefly, for a reader).
                begin_writer(conn)
                conn.execute(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_TIMEOUT}'")
                conn.execute(SCHEMA_SQL)
                conn.execute(_NOTIFY_SQL)
                conn.execute(_GRANT_READER_SQL)
                conn.execute(_SCHEMA_VERSION_SQL)
                conn.execute(
                    "INSERT INTO cinestream_schema (digest) VALUES (%s) ON CONFLICT (singleton) "
                    "DO UPDATE SET digest = EXCLUDED.digest, applied_at = now()",
                    (wanted,),
                )
            log.info("store schema brought up to %s", wanted)
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            if attempt == SCHEMA_ATTEMPTS:
                raise CinestreamError(
                    f"could not bring the store's schema up to this release: its tables stayed "
                    f"locked by other sessions through {SCHEMA_ATTEMPTS} attempts ({exc}); "
                    "see pg_stat_activity for long transactions, or stop the processor and retry"
                ) from exc
            log.warning(
                "store schema change gave way to a running transaction (%s); attempt %d of %d",
                type(exc).__name__,
                attempt + 1,
                SCHEMA_ATTEMPTS,
            )
            time.sleep(min(0.5 * attempt, 3.0))


def truncate_all(conn: psycopg.Connection[Any]) -> None:
    """Empty every table derived from the topics (``cinestream reset``)."""
    with conn.transaction():
        begin_writer(conn)
        conn.execute("TRUNCATE " + ", ".join(DERIVED_TABLES))


def _ensure_role(conn: psycopg.Connection[Any], role: str, password: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )


def _ensure_database(conn: psycopg.Connection[Any], name: str, owner: str | None = None) -> None:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        return
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    conn.execute(statement)


# What every session of the API's read-only role starts with (ALTER ROLE ... SET; the compose
# deployment's infra/compose/postgres-init.sh sets the same). Set each time the local server
# starts, so a state dir from an older release gets them too.
# - statement_timeout: the API bounds each request's work (cinestream.api.routes.metrics); this
#   is the backstop for what those bounds do not foresee (a store far denser than measured, a
#   wait on a lock): a statement that runs longer is cancelled, and the API answers 503 in one
#   line instead of holding a pooled connection and a core. 5 s is tens of times the costliest
#   bounded query measured and still shorter than any client's patience.
# - work_mem: a day of top-movies groups ~150,000 per-movie rows; with the default 4 MB the
#   grouping's sort spills to disk (EXPLAIN: external merge; 98 ms, 60 ms with 32 MB). The API
#   runs at most four queries at once.
READER_ROLE_SETTINGS = {"statement_timeout": "5s", "work_mem": "32MB"}


def ensure_local_databases(
    admin_url: str, *, app_password: str, reader_password: str, airflow_password: str
) -> None:
    """The local stack's roles and databases, made by the superuser at ``admin_url``:
    ``cinestream`` (owner of its database, no superuser), the API's read-only role, and
    ``airflow`` with Airflow's metadata database. Advisory locks and ``pg_notify`` in the
    cinestream database are for the application role only."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        _ensure_role(conn, APP_ROLE, app_password)
        _ensure_role(conn, READER_ROLE, reader_password)
        for name, value in READER_ROLE_SETTINGS.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(READER_ROLE), sql.Identifier(name), sql.Literal(value)
                )
            )
        _ensure_role(conn, AIRFLOW_ROLE, airflow_password)
        _ensure_database(conn, "cinestream", owner=APP_ROLE)
        _ensure_database(conn, "airflow", owner=AIRFLOW_ROLE)
    with psycopg.connect(admin_url, autocommit=True, dbname="cinestream") as conn:
        conn.execute(f"GRANT CONNECT ON DATABASE cinestream TO {READER_ROLE}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}")
        functions = [
            str(sig)
            for (sig,) in conn.execute(
                "SELECT oid::regprocedure::text FROM pg_proc "
                "WHERE proname LIKE 'pg\\_%%advisory%%' OR proname = 'pg_notify'"
            )
        ]
        for signature in functions:
            conn.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
            conn.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {APP_ROLE}")
