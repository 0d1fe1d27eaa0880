"""The writers of the window store: the stream's micro-batch commit and the backfill's
whole-window replacement. Both derive ``window_metrics`` through :func:`finalize_windows`.

Every write is idempotent. The stream adds a micro-batch's counts in one transaction together
with the row that marks the batch committed, so a replayed batch changes nothing; the backfill
replaces whole windows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from cinestream.errors import CHECKPOINT_FIX, CheckpointMismatch, CinestreamError, ProcessorBusy
from cinestream.metrics import TOP_MOVIES_LIMIT, WindowMetric, window_metric
from cinestream.schemas import CELL_FIELDS
from cinestream.store import dlq_outbox, pipeline
from cinestream.store.connection import PUBLISH_LOCK, begin_writer, require_no_open_transaction

WindowKey = tuple[str, int]  # (window_type, window_start_ms)

# The edge between the pipeline's epoch milliseconds and window_metrics' timestamptz columns,
# both exact (integer milliseconds; extract() returns numeric).
MS_TO_TIMESTAMPTZ = "(to_timestamp(0) + {} * interval '1 millisecond')"
TIMESTAMPTZ_TO_MS = "(extract(epoch FROM {}) * 1000)::bigint"
METRIC_COLUMNS = (
    "window_type, "
    + TIMESTAMPTZ_TO_MS.format("window_start")
    + " AS window_start_ms, "
    + TIMESTAMPTZ_TO_MS.format("window_end")
    + " AS window_end_ms, count, avg_rating, p50_rating, p95_rating, top_movies, "
    + TIMESTAMPTZ_TO_MS.format("processing_time")
    + " AS processing_time_ms"
)


def metric_from_row(row: Sequence[Any]) -> WindowMetric:
    """A ``SELECT {METRIC_COLUMNS}`` row as a :class:`WindowMetric`."""
    return WindowMetric(
        window_type=row[0],
        window_start_ms=int(row[1]),
        window_end_ms=int(row[2]),
        count=int(row[3]),
        avg_rating=float(row[4]),
        p50_rating=float(row[5]),
        p95_rating=float(row[6]),
        top_movies=row[7],
        processing_time_ms=int(row[8]),
    )


# --------------------------------------------------------------------------------------------
# Deriving the metrics (shared by stream and backfill)
# --------------------------------------------------------------------------------------------
def finalize_windows(
    conn: psycopg.Connection[Any],
    keys: Iterable[WindowKey],
    processing_time_ms: int | None = None,
) -> list[WindowMetric]:
    """Recompute ``window_metrics`` for ``keys`` from the stored aggregates and upsert them."""
    keys = sorted(set(keys))
    if not keys:
        return []
    params = ([k[0] for k in keys], [k[1] for k in keys])
    key_cte = "WITH k AS (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS k(wt, ws))"
    histograms: dict[WindowKey, dict[int, int]] = defaultdict(dict)
    for wt, ws, half_stars, count in conn.execute(
        key_cte + " SELECT c.window_type, c.window_start_ms, c.half_stars, c.count "
        "FROM window_rating_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws",
        params,
    ):
        histograms[(wt, ws)][half_stars] = count
    # Only each window's leaders leave the database: the SPEC's order (most ratings first, the
    # smaller id on ties) ranked there, so a window of 10,000 movies sends 10 rows, not 10,000.
    movies: dict[WindowKey, list[tuple[int, int]]] = defaultdict(list)
    for wt, ws, movie_id, count in conn.execute(
        key_cte + ", ranked AS ("
        " SELECT c.window_type, c.window_start_ms, c.movie_id, c.count, row_number() OVER ("
        "   PARTITION BY c.window_type, c.window_start_ms ORDER BY c.count DESC, c.movie_id"
        " ) AS rank"
        " FROM window_movie_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws"
        " WHERE c.count > 0)"
        " SELECT window_type, window_start_ms, movie_id, count FROM ranked WHERE rank <= %s",
        (*params, TOP_MOVIES_LIMIT),
    ):
        movies[(wt, ws)].append((movie_id, count))
    ends = {
        (wt, ws): we
        for wt, ws, we in conn.execute(
            key_cte
            + " SELECT s.window_type, s.window_start_ms, s.window_end_ms FROM window_state s"
            " JOIN k ON s.window_type = k.wt AND s.window_start_ms = k.ws",
            params,
        )
    }
    results = [
        window_metric(key[0], key[1], ends[key], histograms[key], movies[key], processing_time_ms)
        for key in keys
        if sum(histograms.get(key, {}).values()) > 0
    ]
    upsert_window_metrics(conn, results)
    # Each changed metric is pending publication until a publisher writes this version.
    conn.execute(
        "UPDATE window_state s SET version = s.version + 1 "
        "FROM unnest(%s::text[], %s::bigint[]) AS k(wt, ws) "
        "WHERE s.window_type = k.wt AND s.window_start_ms = k.ws",
        ([m.window_type for m in results], [m.window_start_ms for m in results]),
    )
    return results


def upsert_window_metrics(conn: psycopg.Connection[Any], rows: Sequence[WindowMetric]) -> None:
    """Insert or replace ``window_metrics`` rows, keyed by (window_type, window_start)."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""
            INSERT INTO window_metrics (window_start, window_end, window_type, count, avg_rating,
                                        p50_rating, p95_rating, top_movies, processing_time)
            VALUES ({MS_TO_TIMESTAMPTZ.format("%(window_start_ms)s")},
                    {MS_TO_TIMESTAMPTZ.format("%(window_end_ms)s")},
                    %(window_type)s, %(count)s, %(avg_rating)s,
                    %(p50_rating)s, %(p95_rating)s, %(top_movies)s,
                    {MS_TO_TIMESTAMPTZ.format("%(processing_time_ms)s")})
            ON CONFLICT (window_type, window_start) DO UPDATE SET
                window_end = EXCLUDED.window_end, count = EXCLUDED.count,
                avg_rating = EXCLUDED.avg_rating, p50_rating = EXCLUDED.p50_rating,
                p95_rating = EXCLUDED.p95_rating, top_movies = EXCLUDED.top_movies,
                processing_time = EXCLUDED.processing_time
            """,
            [dict(r.__dict__) for r in rows],
        )


# --------------------------------------------------------------------------------------------
# Publication: committed rows to the metrics topic, newest last
# --------------------------------------------------------------------------------------------
def publish_pending(
    conn: psycopg.Connection[Any],
    publish: Callable[[list[WindowMetric]], None],
    batch_size: int = 10_000,
) -> int:
    """Hand every window whose metric changed since it was last published to ``publish`` (which
    must deliver or raise), then mark it published; returns how many were published.

    Runs under the publish lock, reading the rows as committed: whoever publishes last publishes
    the newest committed value of every key it touches, so the last record per key in the topic
    equals PostgreSQL. A failed ``publish`` leaves the windows pending for the next publisher.
    """
    require_no_open_transaction(conn, "publish_pending")
    published = 0
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
            rows = conn.execute(
                f"""
                SELECT {METRIC_COLUMNS.replace("window_type,", "m.window_type,", 1)}, s.version
                FROM window_state s JOIN window_metrics m
                  ON m.window_type = s.window_type
                 AND m.window_start = {MS_TO_TIMESTAMPTZ.format("s.window_start_ms")}
                WHERE s.version > s.published_version
                ORDER BY s.window_type, s.window_start_ms LIMIT %s
                """,
                (batch_size,),
            ).fetchall()
            if not rows:
                return published
            metrics = [metric_from_row(r[:-1]) for r in rows]
            publish(metrics)
            conn.execute(
                "UPDATE window_state s SET published_version = greatest(s.published_version, k.v) "
                "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS k(wt, ws, v) "
                "WHERE s.window_type = k.wt AND s.window_start_ms = k.ws",
                (
                    [m.window_type for m in metrics],
                    [m.window_start_ms for m in metrics],
                    [int(r[-1]) for r in rows],
                ),
            )
        published += len(rows)


def _copy_cells(conn: psycopg.Connection[Any], cells_csv: bytes) -> None:
    conn.execute(
        """
        CREATE TEMP TABLE batch_cells (
            window_type text, window_start_ms bigint, window_end_ms bigint,
            movie_id bigint, half_stars smallint, n bigint, future bigint
        ) ON COMMIT DROP
        """
    )
    with conn.cursor().copy(
        f"COPY batch_cells ({', '.join(CELL_FIELDS)}) FROM STDIN WITH (FORMAT csv)"
    ) as copy:
        copy.write(cells_csv)


# --------------------------------------------------------------------------------------------
# The stream's micro-batch commit
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchCommit:
    """One micro-batch as the stream processor hands it to the store.

    :param cells_csv: the batch's valid ratings as ``schemas.CELL_FIELDS`` rows (CSV, no header).
    :param max_event_ms: newest event time of the batch that may move the watermark, if any.
    :param wall_clock_ms: the processor's clock when the batch started: the watermark never
        passes it, however far ahead a producer's clock runs.
    :param end_offsets: the batch's end offset per partition (``{"0": 1234}``), as Spark's log.
    :param start_offsets: where the batch starts (the previous batch's end in Spark's log), or
        None for the first batch of a checkpoint.
    :param fencing_token: the token taken with the checkpoint's lock; a commit whose token is no
        longer current is refused inside its transaction. None only for writers without a lock
        (tests, benchmarks).
    :param primary_window_type: the tumbling type whose windows count each rating once.
    :param window_types: every window type of the pipeline (the store is bound to them).
    :param query_id: the id in the checkpoint's metadata: tells a replay of this checkpoint's
        batch from a batch of a checkpoint recreated at the same location.
    :param dlq: the DLQ messages of the batch's invalid records as (source partition, source
        offset, key, value), committed to the DLQ's outbox with the counts
        (:mod:`cinestream.store.dlq_outbox`).
    """

    checkpoint: str
    topic: str
    topic_id: str | None
    batch_id: int
    cells_csv: bytes
    invalid: int
    max_event_ms: int | None
    wall_clock_ms: int
    allowed_lateness_ms: int
    end_offsets: dict[str, int]
    primary_window_type: str
    start_offsets: dict[str, int] | None = None
    fencing_token: int | None = None
    window_types: tuple[str, ...] = ()
    query_id: str | None = None
    dlq: tuple[dlq_outbox.DlqRow, ...] = ()


@dataclass
class BatchResult:
    """What a commit did: counts, the new watermark and the metrics it derived."""

    batch_id: int
    already_committed: bool
    valid: int = 0
    late: int = 0
    invalid: int = 0
    future: int = 0
    watermark_ms: int = 0
    metrics: list[WindowMetric] = field(default_factory=list)


def commit_batch(
    conn: psycopg.Connection[Any], batch: BatchCommit, processing_time_ms: int | None = None
) -> BatchResult:
    """Apply one micro-batch exactly once.

    Counts of windows the watermark (or a backfill) has closed are not added: they are counted as
    late. The watermark then advances to ``min(newest event time, wall clock) - lateness``. The
    batch's DLQ messages go to the DLQ's outbox in the same transaction; a replayed batch adds
    none.
    """
    require_no_open_transaction(conn, "commit_batch")
    with conn.transaction():
        begin_writer(conn)
        _check_fencing_token(conn, batch)
        store = pipeline.bind_for_commit(
            conn,
            topic=batch.topic,
            topic_id=batch.topic_id,
            window_types=batch.window_types or (batch.primary_window_type,),
            checkpoint=batch.checkpoint,
        )
        if _already_committed(conn, batch, store):
            return BatchResult(batch.batch_id, already_committed=True)
        pipeline.check_continuity(
            store,
            batch.start_offsets,
            batch_id=batch.batch_id,
            checkpoint=batch.checkpoint,
            topic=batch.topic,
        )
        _processor_state_for_update(conn, batch)
        watermark, max_event = store.watermark_ms, store.max_event_ms
        _copy_cells(conn, batch.cells_csv)
        conn.execute(
            """
            CREATE TEMP TABLE batch_windows ON COMMIT DROP AS
            SELECT c.window_type, c.window_start_ms, c.window_end_ms, sum(c.n)::bigint AS n,
                   sum(c.future)::bigint AS future,
                   (c.window_end_ms <= %s OR s.closed_by IS NOT NULL) AS late
            FROM batch_cells c
            LEFT JOIN window_state s
              ON s.window_type = c.window_type AND s.window_start_ms = c.window_start_ms
            GROUP BY c.window_type, c.window_start_ms, c.window_end_ms, s.closed_by
            """,
            (watermark,),
        )
        _add_open_cells(conn)
        touched = conn.execute(
            "SELECT window_type, window_start_ms, n, future, late FROM batch_windows"
        ).fetchall()
        open_keys = [(wt, ws) for wt, ws, _, _, late in touched if not late]
        # Count ratings, not window memberships: the primary type is tumbling, so every rating
        # is in exactly one of its windows.
        primary = batch.primary_window_type
        valid = sum(n for wt, _, n, _, late in touched if wt == primary and not late)
        late_n = sum(n for wt, _, n, _, late in touched if wt == primary and late)
        future_n = sum(f for wt, _, _, f, _ in touched if wt == primary)
        metrics = finalize_windows(conn, open_keys, processing_time_ms)

        new_max_event = max(max_event, batch.max_event_ms or 0)
        new_watermark = next_watermark(
            watermark, new_max_event, batch.wall_clock_ms, batch.allowed_lateness_ms
        )
        conn.execute(
            "UPDATE window_state SET closed_by = 'watermark', updated_at = now() "
            "WHERE closed_by IS NULL AND window_end_ms <= %s",
            (new_watermark,),
        )
        dlq_outbox.enqueue(conn, batch.dlq)
        pipeline.advance(
            conn,
            store,
            end_offsets=batch.end_offsets,
            watermark_ms=new_watermark,
            max_event_ms=new_max_event,
            checkpoint=batch.checkpoint,
        )
        offsets = json.dumps(batch.end_offsets)
        conn.execute(
            """
            INSERT INTO processor_batches (checkpoint, batch_id, end_offsets, valid, invalid, late,
                                           windows_updated, watermark_ms, query_id, start_offsets)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (checkpoint, batch_id) DO UPDATE SET
                end_offsets = EXCLUDED.end_offsets, valid = EXCLUDED.valid,
                invalid = EXCLUDED.invalid, late = EXCLUDED.late,
                windows_updated = EXCLUDED.windows_updated, watermark_ms = EXCLUDED.watermark_ms,
                query_id = EXCLUDED.query_id, start_offsets = EXCLUDED.start_offsets,
                committed_at = now()
            """,
            (
                batch.checkpoint,
                batch.batch_id,
                offsets,
                valid,
                batch.invalid,
                late_n,
                len(open_keys),
                new_watermark,
                batch.query_id,
                None if batch.start_offsets is None else json.dumps(batch.start_offsets),
            ),
        )
        conn.execute(
            """
            UPDATE processor_state SET watermark_ms = %s, max_event_ms = %s, last_batch_id = %s,
                   end_offsets = %s, valid_total = valid_total + %s,
                   invalid_total = invalid_total + %s, late_total = late_total + %s,
                   future_total = future_total + %s, updated_at = now()
            WHERE checkpoint = %s
            """,
            (
                new_watermark,
                new_max_event,
                batch.batch_id,
                offsets,
                valid,
                batch.invalid,
                late_n,
                future_n,
                batch.checkpoint,
            ),
        )
    return BatchResult(
        batch.batch_id, False, valid, late_n, batch.invalid, future_n, new_watermark, metrics
    )


def next_watermark(
    watermark_ms: int, max_event_ms: int, wall_clock_ms: int, lateness_ms: int
) -> int:
    """The SPEC's watermark: ``min(newest valid event time, wall clock) - lateness``; it never
    goes back, and is 0 until an event has been seen."""
    if not max_event_ms:
        return 0
    return max(watermark_ms, min(max_event_ms, wall_clock_ms) - lateness_ms)


def _check_fencing_token(conn: psycopg.Connection[Any], batch: BatchCommit) -> None:
    """Refuse the commit of a processor whose lock was taken over (inside its transaction)."""
    if batch.fencing_token is None:
        return
    current = conn.execute(
        "UPDATE processor_lock SET last_commit_at = now() WHERE checkpoint = %s "
        "RETURNING token, holder",
        (batch.checkpoint,),
    ).fetchone()
    if current is None or int(current[0]) != batch.fencing_token:
        raise ProcessorBusy(
            f"lost the lock on checkpoint {batch.checkpoint}: fencing token "
            f"{batch.fencing_token} is no longer current"
            + (f" ({current[1]} holds token {current[0]})" if current else "")
            + f"; batch {batch.batch_id} is not committed and this processor stops"
        )


def _already_committed(
    conn: psycopg.Connection[Any], batch: BatchCommit, store: pipeline.PipelineBinding
) -> bool:
    """True when the store already holds this very batch of this checkpoint (a replay after a
    restart: Spark runs a batch again that it had not marked done). Raise
    :class:`CheckpointMismatch` when this checkpoint's batch of that id ended elsewhere (its
    checkpoint restored from an older copy and replanned).

    A row of the same location and batch id from another query id belongs to an earlier
    checkpoint at that location and says nothing of this one. A row without a query id (written
    before query ids were recorded) is taken for this batch only when the store ends exactly
    where the batch does; otherwise the store's offsets decide (``check_continuity``)."""
    row = conn.execute(
        "SELECT end_offsets, query_id FROM processor_batches WHERE checkpoint = %s "
        "AND batch_id = %s",
        (batch.checkpoint, batch.batch_id),
    ).fetchone()
    if row is None:
        return False
    stored, query_id = pipeline.parse_offsets(row[0]), row[1]
    if query_id != batch.query_id:
        if query_id is not None and batch.query_id is not None:
            return False  # an earlier checkpoint at this location
        ends_here = all(store.end_offsets.get(p) == o for p, o in batch.end_offsets.items())
        return stored == batch.end_offsets and ends_here
    if stored == batch.end_offsets:
        return True
    raise CheckpointMismatch(
        f"PostgreSQL holds batch {batch.batch_id} of checkpoint {batch.checkpoint} ending at "
        f"offsets {stored}, but Spark's batch {batch.batch_id} ends at {batch.end_offsets}: the "
        "checkpoint is behind the store (restored from an older copy, lost writes, or a second "
        "writer); committing would skip or double-count",
        CHECKPOINT_FIX,
    )


def _processor_state_for_update(conn: psycopg.Connection[Any], batch: BatchCommit) -> None:
    """The checkpoint's row of totals, created on its first batch (the watermark is the
    store's, :mod:`cinestream.store.pipeline`)."""
    conn.execute(
        "INSERT INTO processor_state (checkpoint, topic, topic_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (checkpoint) DO UPDATE SET topic_id = EXCLUDED.topic_id",
        (batch.checkpoint, batch.topic, batch.topic_id),
    )


def _add_open_cells(conn: psycopg.Connection[Any]) -> None:
    """Add ``batch_cells`` to the aggregates of the windows that are still open; book the rest
    as late on their window."""
    conn.execute(
        """
        INSERT INTO window_state (window_type, window_start_ms, window_end_ms, closed_by,
                                  late_count, future_count)
        SELECT window_type, window_start_ms, window_end_ms,
               CASE WHEN late THEN 'watermark' END, CASE WHEN late THEN n ELSE 0 END,
               CASE WHEN late THEN 0 ELSE future END
        FROM batch_windows
        ON CONFLICT (window_type, window_start_ms) DO UPDATE
           SET late_count = window_state.late_count + EXCLUDED.late_count,
               future_count = window_state.future_count + EXCLUDED.future_count,
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


# --------------------------------------------------------------------------------------------
# The backfill's whole-window replacement
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replaced:
    """What a backfill's replacement did: the metrics it wrote, and the windows it kept as
    stored because the recomputation holds fewer ratings than the stream counted in them."""

    metrics: list[WindowMetric]
    kept: list[tuple[str, int, int, int]]  # (window_type, window_start_ms, recomputed, stored)


class BackfillRaced(CinestreamError):
    """A stream committed its first batch while the backfill read the topic."""


def replace_windows(
    conn: psycopg.Connection[Any],
    cells_csv: bytes,
    late_before: Mapping[WindowKey, int] | None = None,
    processing_time_ms: int | None = None,
    *,
    stream_seen: bool = True,
) -> Replaced:
    """Replace the aggregates of every window present in ``cells_csv`` and close them.

    A window whose recomputation holds fewer ratings than the stream had consumed for it by the
    snapshot (its count plus its late ratings then) is kept as it is, late count included: part
    of its ratings are no longer in the topic (retention, or records the read missed), and
    replacing it would lose them, or take late ratings for restored that the read never saw.

    :param late_before: each window's late count when the recomputed ratings were read; those
        late ratings are in the cells now, later ones stay counted as late.
    :param stream_seen: False when the backfill's snapshot found no stream committed in this
        store: checked again here, under the store's lock, since a first stream committing in
        the meantime may have added ratings the backfill did not read to windows it replaces
        (:class:`BackfillRaced`; nothing is written and the backfill can run again).
    """
    require_no_open_transaction(conn, "replace_windows")
    late_before = late_before or {}
    with conn.transaction():
        begin_writer(conn)
        if not stream_seen:
            conn.execute("LOCK TABLE pipeline IN SHARE MODE")  # waits for a commit in flight
            if pipeline.read_binding(conn) is not None:
                raise BackfillRaced(
                    "a stream committed its first batch into this store while the backfill read "
                    "the topic; nothing was replaced: run the backfill again"
                )
        _copy_cells(conn, cells_csv)
        conn.execute(
            "CREATE TEMP TABLE batch_windows ON COMMIT DROP AS "
            "SELECT window_type, window_start_ms, window_end_ms, sum(future)::bigint AS future, "
            "sum(n)::bigint AS n FROM batch_cells GROUP BY window_type, window_start_ms, "
            "window_end_ms"
        )
        # Every rating the stream had consumed for a closed window by the snapshot is in the
        # topic up to the snapshot's offsets: its count, and its late ratings then. A
        # recomputation with fewer read a topic that lost some (retention): keep the window.
        start_ts = MS_TO_TIMESTAMPTZ.format("w.window_start_ms")
        kept = [
            (wt, int(ws), int(n), int(stored))
            for wt, ws, n, stored in conn.execute(
                f"""
                WITH seen AS (
                    SELECT w.window_type, w.window_start_ms, w.n,
                           coalesce((SELECT m.count FROM window_metrics m
                                     WHERE m.window_type = w.window_type
                                       AND m.window_start = {start_ts}), 0)
                           + coalesce((SELECT k.n FROM unnest(%s::text[], %s::bigint[],
                                                              %s::bigint[]) AS k(wt, ws, n)
                                       WHERE k.wt = w.window_type
                                         AND k.ws = w.window_start_ms), 0) AS stored
                    FROM batch_windows w
                )
                DELETE FROM batch_windows w USING seen
                WHERE seen.window_type = w.window_type
                  AND seen.window_start_ms = w.window_start_ms AND seen.stored > w.n
                RETURNING w.window_type, w.window_start_ms, w.n, seen.stored
                """,
                (
                    [k[0] for k in late_before],
                    [k[1] for k in late_before],
                    list(late_before.values()),
                ),
            )
        ]
        if kept:
            conn.execute(
                "DELETE FROM batch_cells c WHERE NOT EXISTS (SELECT 1 FROM batch_windows w "
                "WHERE w.window_type = c.window_type AND w.window_start_ms = c.window_start_ms)"
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
                                      late_count, future_count)
            SELECT window_type, window_start_ms, window_end_ms, 'backfill', 0, future
            FROM batch_windows
            ON CONFLICT (window_type, window_start_ms) DO UPDATE
               SET closed_by = 'backfill',
                   late_count = greatest(0, window_state.late_count - coalesce(
                       (SELECT k.n FROM unnest(%s::text[], %s::bigint[], %s::bigint[])
                                        AS k(wt, ws, n)
                        WHERE k.wt = EXCLUDED.window_type AND k.ws = EXCLUDED.window_start_ms),
                       0)),
                   future_count = EXCLUDED.future_count, updated_at = now()
            """,
            (
                [k[0] for k in late_before],
                [k[1] for k in late_before],
                list(late_before.values()),
            ),
        )
        keys = [
            (wt, ws)
            for wt, ws in conn.execute("SELECT window_type, window_start_ms FROM batch_windows")
        ]
        return Replaced(finalize_windows(conn, keys, processing_time_ms), sorted(kept))


def record_backfill_run(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    *,
    windows: int,
    ratings: int,
    skipped_open: int,
) -> None:
    """Remember a finished backfill of ``[start, end)`` in ``backfill_runs``."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO backfill_runs (range_start, range_end, windows, ratings, skipped_open)"
            " VALUES (%s, %s, %s, %s, %s)",
            (start, end, windows, ratings, skipped_open),
        )


@dataclass(frozen=True)
class Pruned:
    """Rows removed by :func:`prune_detail`."""

    windows: int
    detail_rows: int
    batches: int


def prune_detail(conn: psycopg.Connection[Any], before_ms: int) -> Pruned:
    """Delete the per-window detail of windows that ended before ``before_ms`` and that the
    store's watermark has closed (their ``window_metrics`` and ``window_state`` rows stay), and
    batch records older than that but the newest of each checkpoint.

    Only closed windows: the stream adds to an open window's detail, so pruning one would
    restart it from zero (a backlog of history is open long after the wall-clock retention). A
    closed window without detail stays closed: its end is behind the watermark, so a rating for
    it is counted late, as for any closed window. Its ``window_state`` row stays: it holds the
    window's late count, which a later backfill needs to tell a topic that lost records
    (retention) from a window it may replace (the model walk, seed 20261201, step 73: a window
    of 29 late ratings, its state pruned, was replaced by the 1 rating retention had left)."""
    require_no_open_transaction(conn, "prune_detail")
    with conn.transaction():
        begin_writer(conn)
        conn.execute(
            "CREATE TEMP TABLE old_windows ON COMMIT DROP AS SELECT s.window_type, "
            "s.window_start_ms FROM window_state s WHERE s.window_end_ms < %s "
            "AND s.version <= s.published_version AND s.closed_by IS NOT NULL "
            "AND s.window_end_ms <= (SELECT coalesce(max(watermark_ms), 0) FROM pipeline) "
            "AND EXISTS (SELECT 1 FROM window_rating_counts r WHERE r.window_type = "
            "s.window_type AND r.window_start_ms = s.window_start_ms)",
            (before_ms,),
        )
        detail = 0
        for table in ("window_rating_counts", "window_movie_counts"):
            detail += conn.execute(
                f"DELETE FROM {table} t USING old_windows o "  # noqa: S608 - fixed names
                "WHERE t.window_type = o.window_type AND t.window_start_ms = o.window_start_ms"
            ).rowcount
        (windows,) = conn.execute("SELECT count(*) FROM old_windows").fetchone() or (0,)
        batches = conn.execute(
            "DELETE FROM processor_batches b WHERE committed_at < "
            f"{MS_TO_TIMESTAMPTZ.format('%s::bigint')} AND batch_id < "
            "(SELECT max(batch_id) FROM processor_batches l WHERE l.checkpoint = b.checkpoint)",
            (before_ms,),
        ).rowcount
    return Pruned(int(windows), detail, batches)
