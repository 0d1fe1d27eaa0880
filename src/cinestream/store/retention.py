"""Retention: the per-window detail of windows the watermark closed long ago is pruned
(``window_metrics`` and ``window_state`` stay)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from cinestream.store.connection import begin_writer, require_no_open_transaction
from cinestream.store.window_metrics import DETAIL_TABLES, MS_TO_TIMESTAMPTZ


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
        for table, _ in DETAIL_TABLES:
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
