"""Batch backfill: recompute whole windows of ``[start, end)`` from Kafka and replace them.

Uses the same transforms as the stream (:mod:`cinestream.spark_transforms`) and the same
metric derivation (:func:`cinestream.store.finalize_windows`): one definition, two drivers.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cinestream import store
from cinestream.errors import CinestreamError
from cinestream.schemas import format_time
from cinestream.settings import Settings

log = logging.getLogger("cinestream.backfill")


@dataclass
class BackfillResult:
    windows: int
    ratings: int
    skipped_open: int
    seconds: float


def read_range(spark: Any, settings: Settings, start_ms: int, lookback_ms: int | None) -> Any:
    """Kafka records from ``start - lookback`` (by record timestamp) or earliest, to latest."""
    reader = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.ratings_topic)
        .option("endingOffsets", "latest")
        .option("failOnDataLoss", "false")
    )
    if lookback_ms is None:
        reader = reader.option("startingOffsets", "earliest")
    else:
        reader = reader.option("startingTimestamp", str(max(0, start_ms - lookback_ms))).option(
            "startingOffsetsByTimestampStrategy", "latest"
        )
    return reader.load()


def run_backfill(
    spark: Any,
    settings: Settings,
    start: datetime,
    end: datetime,
    lookback_ms: int | None = 3_600_000,
) -> BackfillResult:
    from pyspark.sql import functions as F

    from cinestream.processor import _publish_metrics
    from cinestream.spark_transforms import events_in_range, parse_ratings, window_cells

    if end <= start:
        raise CinestreamError(
            f"--end ({format_time(end)}) must be after --start ({format_time(start)})"
        )
    began = time.monotonic()
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    # A window may still receive records until the allowed lateness has passed.
    closable_ms = int(time.time() * 1000) - settings.allowed_lateness_s * 1000
    log.info(
        "backfill [%s, %s) from topic %s on %s (%s); windows %s",
        format_time(start_ms),
        format_time(end_ms),
        settings.ratings_topic,
        settings.kafka_bootstrap,
        "from earliest"
        if lookback_ms is None
        else f"from record timestamp {format_time(max(0, start_ms - lookback_ms))}",
        ",".join(settings.window_types),
    )
    parsed = parse_ratings(read_range(spark, settings, start_ms, lookback_ms))
    cells = window_cells(events_in_range(parsed, start_ms, end_ms), settings.windows, 2**62)
    inside = cells.where(
        (F.col("window_start_ms") >= start_ms) & (F.col("window_end_ms") <= end_ms)
    )
    table = inside.toArrow()
    open_mask = pc.greater(table["window_end_ms"], closable_ms)
    skipped = len(set(table.filter(open_mask)["window_start_ms"].to_pylist()))
    table = table.filter(pc.invert(open_mask))
    primary = table.filter(pc.equal(table["window_type"], settings.window_types[0]))
    ratings = int(pc.sum(primary["n"]).as_py() or 0)
    sink = io.BytesIO()
    from cinestream.processor import CELL_COLUMNS

    pacsv.write_csv(table.select(CELL_COLUMNS), sink, pacsv.WriteOptions(include_header=False))
    with store.connect(settings.resolved_database_url) as conn:
        store.ensure_schema(conn)
        metrics = store.replace_windows(conn, sink.getvalue())
        with conn.transaction():
            conn.execute(
                "INSERT INTO backfill_runs (range_start, range_end, windows, ratings, skipped_open)"
                " VALUES (%s, %s, %s, %s, %s)",
                (start, end, len(metrics), ratings, skipped),
            )
    _publish_metrics(settings, [m.as_row() for m in metrics])
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
