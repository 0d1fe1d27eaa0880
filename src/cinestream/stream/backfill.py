"""Batch backfill: recompute whole windows of ``[start, end)`` from Kafka and replace them.

Uses the same transforms as the stream (:mod:`cinestream.stream.transforms`), the same cells
hand-off (:mod:`cinestream.stream.cells`) and the same metric derivation
(:func:`cinestream.store.windows.finalize_windows`): one definition, two drivers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cinestream.errors import CinestreamError
from cinestream.kafka.produce import publish_metrics
from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import schema
from cinestream.store import windows as store_windows
from cinestream.store.connection import connect
from cinestream.stream.cells import BatchCells, ratings_batch

log = logging.getLogger("cinestream.backfill")


@dataclass
class BackfillResult:
    """Windows replaced, ratings they hold, open windows left to the stream, and the time taken."""

    windows: int
    ratings: int
    skipped_open: int
    seconds: float


def run_backfill(
    spark: Any,
    settings: Settings,
    start: datetime,
    end: datetime,
    lookback_ms: int | None = 3_600_000,
) -> BackfillResult:
    """Replace the closed windows of ``[start, end)`` with a recomputation from ``ratings``.

    :param lookback_ms: read records whose Kafka timestamp is at most this long before ``start``;
        None reads the topic from its earliest offset.
    """
    from pyspark.sql import functions as F

    from cinestream.stream.transforms import events_in_range, parse_ratings, window_cells

    if end <= start:
        raise CinestreamError(
            f"--end ({format_time(end)}) must be after --start ({format_time(start)})"
        )
    began = time.monotonic()
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    # A window may still receive records until the allowed lateness has passed.
    closable_ms = int(time.time() * 1000) - settings.allowed_lateness_s * 1000
    from_ms = None if lookback_ms is None else max(0, start_ms - lookback_ms)
    log.info(
        "backfill [%s, %s) from topic %s on %s (%s); windows %s",
        format_time(start_ms),
        format_time(end_ms),
        settings.ratings_topic,
        settings.kafka_bootstrap,
        "from earliest" if from_ms is None else f"from record timestamp {format_time(from_ms)}",
        ",".join(settings.window_types),
    )
    parsed = parse_ratings(ratings_batch(spark, settings, from_ms))
    cells = window_cells(events_in_range(parsed, start_ms, end_ms), settings.windows, 2**62)
    inside = cells.where(
        (F.col("window_start_ms") >= start_ms) & (F.col("window_end_ms") <= end_ms)
    )
    closed, skipped = BatchCells.from_arrow(inside.toArrow()).without_windows_ending_after(
        closable_ms
    )
    ratings = closed.ratings(settings.window_types[0])
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        metrics = store_windows.replace_windows(conn, closed.to_csv())
        store_windows.record_backfill_run(
            conn, start, end, windows=len(metrics), ratings=ratings, skipped_open=skipped
        )
    publish_metrics(settings, metrics)
    result = BackfillResult(len(metrics), ratings, skipped, time.monotonic() - began)
    log.info(
        "backfill wrote %d windows (%d ratings) to window_metrics and %s; %d windows still "
        "open were left to the stream; %.1fs",
        result.windows,
        result.ratings,
        settings.metrics_topic,
        result.skipped_open,
        result.seconds,
    )
    return result
