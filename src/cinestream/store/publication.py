"""Publication: committed ``window_metrics`` rows to the metrics topic, newest last."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from cinestream.metrics import WindowMetric
from cinestream.store.connection import PUBLISH_LOCK, require_no_open_transaction
from cinestream.store.window_metrics import METRIC_COLUMNS, MS_TO_TIMESTAMPTZ, metric_from_row


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
