"""PostgreSQL: the window store (exact per-window aggregates) and ``window_metrics``.

Every write is idempotent. The stream adds a micro-batch's counts in one transaction together with
the row that marks the batch committed, so a replayed batch changes nothing; the backfill replaces
whole windows. Both derive ``window_metrics`` through :func:`finalize_windows`.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from cinestream.errors import ServiceUnavailable, first_line
from cinestream.metrics import WindowMetric, window_metric

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
CREATE TABLE IF NOT EXISTS backfill_runs (
    id             bigserial PRIMARY KEY,
    range_start    timestamptz NOT NULL,
    range_end      timestamptz NOT NULL,
    windows        integer     NOT NULL,
    ratings        bigint      NOT NULL,
    skipped_open   integer     NOT NULL,
    finished_at    timestamptz NOT NULL DEFAULT now()
);
"""

# The local stack creates a read-only role for the API; elsewhere it may not exist.
_GRANT_READER_SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cinestream_reader') THEN
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO cinestream_reader;
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
    "window_metrics",
    "window_rating_counts",
    "window_movie_counts",
    "window_state",
    "processor_state",
    "processor_batches",
    "backfill_runs",
)

# Serialises the stream's commits with backfills: both rewrite the same windows.
_STORE_LOCK = 0x63696E65  # "cine"

WindowKey = tuple[str, int]  # (window_type, window_start_ms)
T = TypeVar("T")


def connect(url: str, *, autocommit: bool = False, timeout: int = 5) -> psycopg.Connection[Any]:
    """Open a connection, or raise :class:`ServiceUnavailable` naming the database."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        where = url.rsplit("@", 1)[-1]
        first = first_line(exc)
        raise ServiceUnavailable(
            f"PostgreSQL at {where} is unavailable ({first}); start it with `cinestream up` "
            "or set CINESTREAM_DATABASE_URL"
        ) from exc


def one(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
    """The single row an aggregate query returns."""
    row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    if row is None:
        raise RuntimeError(f"query returned no row: {sql}")
    return tuple(row)


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK + 1,))
        conn.execute(SCHEMA_SQL)
        conn.execute(_NOTIFY_SQL)
        conn.execute(_GRANT_READER_SQL)


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


# --------------------------------------------------------------------------------------------
# Reading the aggregates and deriving the metrics (shared by stream and backfill)
# --------------------------------------------------------------------------------------------
def finalize_windows(
    conn: psycopg.Connection[Any],
    keys: Iterable[WindowKey],
    processing_time: datetime | None = None,
) -> list[WindowMetric]:
    """Recompute ``window_metrics`` for ``keys`` from the stored aggregates and upsert them."""
    keys = sorted(set(keys))
    if not keys:
        return []
    types = [k[0] for k in keys]
    starts = [k[1] for k in keys]
    key_cte = "WITH k AS (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS k(wt, ws))"
    histograms: dict[WindowKey, dict[int, int]] = defaultdict(dict)
    for wt, ws, half_stars, count in conn.execute(
        key_cte + " SELECT c.window_type, c.window_start_ms, c.half_stars, c.count "
        "FROM window_rating_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws",
        (types, starts),
    ):
        histograms[(wt, ws)][half_stars] = count
    movies: dict[WindowKey, list[tuple[int, int]]] = defaultdict(list)
    for wt, ws, movie_id, count in conn.execute(
        key_cte + " SELECT c.window_type, c.window_start_ms, c.movie_id, c.count "
        "FROM window_movie_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws",
        (types, starts),
    ):
        movies[(wt, ws)].append((movie_id, count))
    ends = dict(
        ((wt, ws), we)
        for wt, ws, we in conn.execute(
            key_cte
            + " SELECT s.window_type, s.window_start_ms, s.window_end_ms FROM window_state s"
            " JOIN k ON s.window_type = k.wt AND s.window_start_ms = k.ws",
            (types, starts),
        )
    )
    now = processing_time or datetime.now(tz=UTC)
    results = [
        window_metric(key[0], key[1], ends[key], histograms[key], movies[key], now)
        for key in keys
        if sum(histograms.get(key, {}).values()) > 0
    ]
    upsert_window_metrics(conn, results)
    return results


def upsert_window_metrics(conn: psycopg.Connection[Any], rows: Sequence[WindowMetric]) -> None:
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO window_metrics (window_start, window_end, window_type, count, avg_rating,
                                        p50_rating, p95_rating, top_movies, processing_time)
            VALUES (%(window_start)s, %(window_end)s, %(window_type)s, %(count)s, %(avg_rating)s,
                    %(p50_rating)s, %(p95_rating)s, %(top_movies)s, %(processing_time)s)
            ON CONFLICT (window_type, window_start) DO UPDATE SET
                window_end = EXCLUDED.window_end, count = EXCLUDED.count,
                avg_rating = EXCLUDED.avg_rating, p50_rating = EXCLUDED.p50_rating,
                p95_rating = EXCLUDED.p95_rating, top_movies = EXCLUDED.top_movies,
                processing_time = EXCLUDED.processing_time
            """,
            [r.as_row() for r in rows],
        )


# --------------------------------------------------------------------------------------------
# The stream's micro-batch commit
# --------------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    batch_id: int
    already_committed: bool
    valid: int = 0
    late: int = 0
    invalid: int = 0
    watermark_ms: int = 0
    metrics: list[WindowMetric] = field(default_factory=list)


def _require_no_open_transaction(conn: psycopg.Connection[Any], what: str) -> None:
    """Writers commit their own transaction. Called inside an open one, ``conn.transaction()``
    would only make a savepoint and the batch would not be committed when the writer returns."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError(
            f"{what} needs a connection with no open transaction (found "
            f"{conn.info.transaction_status.name}); use autocommit or commit first"
        )


def _copy_cells(conn: psycopg.Connection[Any], cells_csv: bytes) -> None:
    conn.execute(
        """
        CREATE TEMP TABLE batch_cells (
            window_type text, window_start_ms bigint, window_end_ms bigint,
            movie_id bigint, half_stars smallint, n bigint
        ) ON COMMIT DROP
        """
    )
    with conn.cursor().copy(
        "COPY batch_cells (window_type, window_start_ms, window_end_ms, movie_id, half_stars, n) "
        "FROM STDIN WITH (FORMAT csv)"
    ) as copy:
        copy.write(cells_csv)


def commit_batch(
    conn: psycopg.Connection[Any],
    *,
    checkpoint: str,
    topic: str,
    topic_id: str | None,
    batch_id: int,
    cells_csv: bytes,
    invalid: int,
    batch_max_event_ms: int | None,
    allowed_lateness_ms: int,
    end_offsets: dict[str, Any],
    primary_window_type: str,
    processing_time: datetime | None = None,
) -> BatchResult:
    """Apply one micro-batch exactly once.

    ``cells_csv`` holds ``window_type, window_start_ms, window_end_ms, movie_id, half_stars, n``
    rows. Counts of windows the watermark (or a backfill) has closed are not added: they are
    counted as late. The watermark then advances to ``batch_max_event_ms - allowed_lateness_ms``.
    """
    _require_no_open_transaction(conn, "commit_batch")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK,))
        done = conn.execute(
            "SELECT 1 FROM processor_batches WHERE checkpoint = %s AND batch_id = %s",
            (checkpoint, batch_id),
        ).fetchone()
        if done:
            return BatchResult(batch_id, already_committed=True)
        state = conn.execute(
            "SELECT watermark_ms, max_event_ms FROM processor_state WHERE checkpoint = %s "
            "FOR UPDATE",
            (checkpoint,),
        ).fetchone()
        if state is None:
            conn.execute(
                "INSERT INTO processor_state (checkpoint, topic, topic_id) VALUES (%s, %s, %s)",
                (checkpoint, topic, topic_id),
            )
            watermark, max_event = 0, 0
        else:
            watermark, max_event = state
        _copy_cells(conn, cells_csv)
        conn.execute(
            """
            CREATE TEMP TABLE batch_windows ON COMMIT DROP AS
            SELECT c.window_type, c.window_start_ms, c.window_end_ms, sum(c.n)::bigint AS n,
                   (c.window_end_ms <= %s OR s.closed_by IS NOT NULL) AS late
            FROM batch_cells c
            LEFT JOIN window_state s
              ON s.window_type = c.window_type AND s.window_start_ms = c.window_start_ms
            GROUP BY c.window_type, c.window_start_ms, c.window_end_ms, s.closed_by
            """,
            (watermark,),
        )
        conn.execute(
            """
            INSERT INTO window_state (window_type, window_start_ms, window_end_ms, closed_by,
                                      late_count)
            SELECT window_type, window_start_ms, window_end_ms,
                   CASE WHEN late THEN 'watermark' END, CASE WHEN late THEN n ELSE 0 END
            FROM batch_windows
            ON CONFLICT (window_type, window_start_ms) DO UPDATE
               SET late_count = window_state.late_count + EXCLUDED.late_count,
                   updated_at = now()
            """
        )
        conn.execute(
            """
            INSERT INTO window_rating_counts (window_type, window_start_ms, half_stars, count)
            SELECT c.window_type, c.window_start_ms, c.half_stars, sum(c.n)
            FROM batch_cells c JOIN batch_windows w
              ON w.window_type = c.window_type AND w.window_start_ms = c.window_start_ms
            WHERE NOT w.late
            GROUP BY c.window_type, c.window_start_ms, c.half_stars
            ON CONFLICT (window_type, window_start_ms, half_stars)
            DO UPDATE SET count = window_rating_counts.count + EXCLUDED.count
            """
        )
        conn.execute(
            """
            INSERT INTO window_movie_counts (window_type, window_start_ms, movie_id, count)
            SELECT c.window_type, c.window_start_ms, c.movie_id, sum(c.n)
            FROM batch_cells c JOIN batch_windows w
              ON w.window_type = c.window_type AND w.window_start_ms = c.window_start_ms
            WHERE NOT w.late
            GROUP BY c.window_type, c.window_start_ms, c.movie_id
            ON CONFLICT (window_type, window_start_ms, movie_id)
            DO UPDATE SET count = window_movie_counts.count + EXCLUDED.count
            """
        )
        touched = conn.execute(
            "SELECT window_type, window_start_ms, n, late FROM batch_windows"
        ).fetchall()
        open_keys = [(wt, ws) for wt, ws, _, late in touched if not late]
        # Count ratings, not window memberships: the primary type is tumbling, so every rating
        # is in exactly one of its windows.
        valid = sum(n for wt, _, n, late in touched if wt == primary_window_type and not late)
        late_n = sum(n for wt, _, n, late in touched if wt == primary_window_type and late)
        metrics = finalize_windows(conn, open_keys, processing_time)

        new_max_event = max(max_event, batch_max_event_ms or 0)
        new_watermark = max(watermark, new_max_event - allowed_lateness_ms) if new_max_event else 0
        conn.execute(
            "UPDATE window_state SET closed_by = 'watermark', updated_at = now() "
            "WHERE closed_by IS NULL AND window_end_ms <= %s",
            (new_watermark,),
        )
        conn.execute(
            """
            INSERT INTO processor_batches (checkpoint, batch_id, end_offsets, valid, invalid, late,
                                           windows_updated, watermark_ms)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                checkpoint,
                batch_id,
                json.dumps(end_offsets),
                valid,
                invalid,
                late_n,
                len(open_keys),
                new_watermark,
            ),
        )
        conn.execute(
            """
            UPDATE processor_state SET watermark_ms = %s, max_event_ms = %s, last_batch_id = %s,
                   end_offsets = %s, valid_total = valid_total + %s,
                   invalid_total = invalid_total + %s, late_total = late_total + %s,
                   updated_at = now()
            WHERE checkpoint = %s
            """,
            (
                new_watermark,
                new_max_event,
                batch_id,
                json.dumps(end_offsets),
                valid,
                invalid,
                late_n,
                checkpoint,
            ),
        )
    return BatchResult(batch_id, False, valid, late_n, invalid, new_watermark, metrics)


def metrics_for_keys(
    conn: psycopg.Connection[Any], keys: Iterable[WindowKey]
) -> list[dict[str, Any]]:
    keys = sorted(set(keys))
    if not keys:
        return []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT m.* FROM window_metrics m
            JOIN unnest(%s::text[], %s::bigint[]) AS k(wt, ws)
              ON m.window_type = k.wt
             AND m.window_start = to_timestamp(k.ws / 1000.0)
            ORDER BY m.window_type, m.window_start
            """,
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return cur.fetchall()


# --------------------------------------------------------------------------------------------
# The backfill's whole-window replacement
# --------------------------------------------------------------------------------------------
def replace_windows(
    conn: psycopg.Connection[Any],
    cells_csv: bytes,
    processing_time: datetime | None = None,
) -> list[WindowMetric]:
    """Replace the aggregates of every window present in ``cells_csv`` and close them."""
    _require_no_open_transaction(conn, "replace_windows")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK,))
        _copy_cells(conn, cells_csv)
        conn.execute(
            "CREATE TEMP TABLE batch_windows ON COMMIT DROP AS "
            "SELECT DISTINCT window_type, window_start_ms, window_end_ms FROM batch_cells"
        )
        for table in ("window_rating_counts", "window_movie_counts"):
            conn.execute(
                f"DELETE FROM {table} t USING batch_windows w "  # noqa: S608 - fixed names
                "WHERE t.window_type = w.window_type AND t.window_start_ms = w.window_start_ms"
            )
        conn.execute(
            """
            INSERT INTO window_rating_counts (window_type, window_start_ms, half_stars, count)
            SELECT window_type, window_start_ms, half_stars, sum(n) FROM batch_cells
            GROUP BY window_type, window_start_ms, half_stars
            """
        )
        conn.execute(
            """
            INSERT INTO window_movie_counts (window_type, window_start_ms, movie_id, count)
            SELECT window_type, window_start_ms, movie_id, sum(n) FROM batch_cells
            GROUP BY window_type, window_start_ms, movie_id
            """
        )
        conn.execute(
            """
            INSERT INTO window_state (window_type, window_start_ms, window_end_ms, closed_by,
                                      late_count)
            SELECT window_type, window_start_ms, window_end_ms, 'backfill', 0 FROM batch_windows
            ON CONFLICT (window_type, window_start_ms) DO UPDATE
               SET closed_by = 'backfill', late_count = 0, updated_at = now()
            """
        )
        keys = [
            tuple(r) for r in conn.execute("SELECT window_type, window_start_ms FROM batch_windows")
        ]
        return finalize_windows(conn, keys, processing_time)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StoredCheckpoint:
    """What PostgreSQL holds of a processor checkpoint's batches."""

    topic_id: str | None
    batches: int
    last_batch_id: int | None


def stored_checkpoint(conn: psycopg.Connection[Any], checkpoint: str) -> StoredCheckpoint:
    with conn.transaction():
        row = conn.execute(
            "SELECT topic_id FROM processor_state WHERE checkpoint = %s", (checkpoint,)
        ).fetchone()
        batches, last = one(
            conn,
            "SELECT count(*), max(batch_id) FROM processor_batches WHERE checkpoint = %s",
            (checkpoint,),
        )
    return StoredCheckpoint(row[0] if row else None, int(batches), last)


def watermark_ms(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute("SELECT max(watermark_ms) FROM processor_state").fetchone()
    return row[0] if row else None


def truncate_all(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_STORE_LOCK,))
        conn.execute("TRUNCATE " + ", ".join(DERIVED_TABLES))


def forget_checkpoint(conn: psycopg.Connection[Any], checkpoint: str) -> None:
    """Drop the bookkeeping of a checkpoint that was deleted (batch ids restart at 0)."""
    with conn.transaction():
        conn.execute("DELETE FROM processor_batches WHERE checkpoint = %s", (checkpoint,))
        conn.execute("DELETE FROM processor_state WHERE checkpoint = %s", (checkpoint,))


# --------------------------------------------------------------------------------------------
# One processor per checkpoint
# --------------------------------------------------------------------------------------------
def checkpoint_lock_id(checkpoint: str) -> int:
    return zlib.crc32(checkpoint.encode()) & 0x7FFFFFFF


class CheckpointLock:
    """A session-level advisory lock held for as long as a processor runs on a checkpoint."""

    def __init__(self, url: str, checkpoint: str) -> None:
        self.url = url
        self.checkpoint = checkpoint
        self.lock_id = checkpoint_lock_id(checkpoint)
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        conn = connect(self.url, autocommit=True)
        conn.execute("SET application_name = 'cinestream-processor'")
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,)).fetchone()
        if got and got[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def holder(self) -> str | None:
        """Describe the session holding the lock (pid, application, since), if any."""
        with connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                """
                SELECT a.pid, a.application_name, a.backend_start, a.client_addr
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted
                """,
                (self.lock_id,),
            ).fetchone()
        if not row:
            return None
        return f"backend pid {row[0]} ({row[1] or 'unknown'}), connected since {row[2]:%H:%M:%S}"

    def ensure_held(self) -> None:
        """Check the lock is still ours; re-take it after a database restart."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                self._conn.close()
        self._conn = None
        if not self.try_acquire():
            from cinestream.errors import ProcessorBusy

            raise ProcessorBusy(
                f"lost the lock on checkpoint {self.checkpoint} while PostgreSQL was down and "
                "another processor took it; this one stops"
            )

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_id,))
            except psycopg.Error:
                pass
            self._conn.close()
        self._conn = None
