"""The backfill's whole-window replacement: every window of a recomputation replaced and closed,
unless the topic no longer holds all that the stream counted in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from cinestream.errors import CinestreamError
from cinestream.metrics import WindowMetric
from cinestream.store import pipeline
from cinestream.store.connection import begin_writer, require_no_open_transaction
from cinestream.store.window_metrics import (
    DETAIL_TABLES,
    MS_TO_TIMESTAMPTZ,
    WindowKey,
    finalize_windows,
    stage_cells,
)


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
        stage_cells(conn, cells_csv)
        conn.execute(
            "CREATE TEMP TABLE batch_windows ON COMMIT DROP AS "
            "SELECT window_type, window_start_ms, window_end_ms, sum(future)::bigint AS future, "
            "sum(n)::bigint AS n FROM batch_cells GROUP BY window_type, window_start_ms, "
            "window_end_ms"
        )
        kept = _keep_windows_the_topic_lost(conn, late_before)
        if kept:
            conn.execute(
                "DELETE FROM batch_cells c WHERE NOT EXISTS (SELECT 1 FROM batch_windows w "
                "WHERE w.window_type = c.window_type AND w.window_start_ms = c.window_start_ms)"
            )
        _write_replacement(conn, late_before)
        keys = [
            (wt, ws)
            for wt, ws in conn.execute("SELECT window_type, window_start_ms FROM batch_windows")
        ]
        return Replaced(finalize_windows(conn, keys, processing_time_ms), sorted(kept))


def _keep_windows_the_topic_lost(
    conn: psycopg.Connection[Any], late_before: Mapping[WindowKey, int]
) -> list[tuple[str, int, int, int]]:
    """Take out of ``batch_windows`` every window whose recomputation holds fewer ratings than
    the stream had consumed for it; returns them as (type, start, recomputed, stored)."""
    # Every rating the stream had consumed for a closed window by the snapshot is in the
    # topic up to the snapshot's offsets: its count, and its late ratings then. A
    # recomputation with fewer read a topic that lost some (retention): keep the window.
    start_ts = MS_TO_TIMESTAMPTZ.format("w.window_start_ms")
    return [
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


def _write_replacement(conn: psycopg.Connection[Any], late_before: Mapping[WindowKey, int]) -> None:
    """Replace the detail of every window left in ``batch_windows`` and close it by the
    backfill; its late count keeps only the late ratings the recomputation did not read."""
    for table, column in DETAIL_TABLES:
        conn.execute(
            f"DELETE FROM {table} t USING batch_windows w "  # noqa: S608 - fixed names
            "WHERE t.window_type = w.window_type AND t.window_start_ms = w.window_start_ms"
        )
        conn.execute(
            f"INSERT INTO {table} (window_type, window_start_ms, {column}, count) "  # noqa: S608
            f"SELECT window_type, window_start_ms, {column}, sum(n) FROM batch_cells "
            f"GROUP BY window_type, window_start_ms, {column}"
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
