"""The stream's micro-batch commit: one transaction adds a batch's counts to the open windows,
books the rest as late, advances the watermark and the store's offsets, records the batch and
puts its invalid records in the DLQ's outbox. A replayed batch changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg

from cinestream.errors import CHECKPOINT_FIX, CheckpointMismatch, ProcessorBusy
from cinestream.metrics import WindowMetric
from cinestream.store import dlq_outbox, pipeline
from cinestream.store.connection import begin_writer, require_no_open_transaction
from cinestream.store.window_metrics import DETAIL_TABLES, finalize_windows, stage_cells


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
        _stage_batch_windows(conn, batch.cells_csv, watermark)
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
        _record_batch(
            conn, batch, valid, late_n, future_n, len(open_keys), new_watermark, new_max_event
        )
    return BatchResult(
        batch.batch_id, False, valid, late_n, batch.invalid, future_n, new_watermark, metrics
    )


def _record_batch(
    conn: psycopg.Connection[Any],
    batch: BatchCommit,
    valid: int,
    late_n: int,
    future_n: int,
    windows_updated: int,
    new_watermark: int,
    new_max_event: int,
) -> None:
    """The batch's row in ``processor_batches`` and the checkpoint's totals."""
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
            windows_updated,
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


def _stage_batch_windows(conn: psycopg.Connection[Any], cells_csv: bytes, watermark: int) -> None:
    """The batch's cells (``batch_cells``) and its windows (``batch_windows``), each window marked
    late when the watermark or a backfill has closed it."""
    stage_cells(conn, cells_csv)
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
    for table, column in DETAIL_TABLES:
        conn.execute(
            f"""
            INSERT INTO {table} (window_type, window_start_ms, {column}, count)
            SELECT c.window_type, c.window_start_ms, c.{column}, sum(c.n)
            FROM batch_cells c JOIN batch_windows w
              ON w.window_type = c.window_type AND w.window_start_ms = c.window_start_ms
            WHERE NOT w.late
            GROUP BY c.window_type, c.window_start_ms, c.{column}
            ON CONFLICT (window_type, window_start_ms, {column})
            DO UPDATE SET count = {table}.count + EXCLUDED.count
            """  # noqa: S608 - fixed names
        )
