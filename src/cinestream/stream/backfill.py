"""Batch backfill: recompute whole windows of ``[start, end)`` from Kafka and replace them.

Uses the same transforms as the stream (:mod:`cinestream.stream.transforms`), the same cells
hand-off (:mod:`cinestream.stream.cells`) and the same metric derivation
(:func:`cinestream.store.window_metrics.finalize_windows`): one definition, two drivers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cinestream.errors import CinestreamError
from cinestream.kafka import admin
from cinestream.kafka.produce import publish_metrics
from cinestream.kafka.read import stamped_before_but_later
from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import reads, schema
from cinestream.store import replace as store_replace
from cinestream.store.connection import connect
from cinestream.store.publication import publish_pending
from cinestream.stream.cells import BatchCells
from cinestream.stream.kafka_io import ratings_batch

log = logging.getLogger("cinestream.backfill")


@dataclass
class BackfillResult:
    """Windows replaced, ratings they hold, open windows left to the stream, and the time taken."""

    windows: int
    ratings: int
    skipped_open: int
    seconds: float


def read_range(
    settings: Settings,
    from_ms: int | None,
    stream_end: dict[str, int] | None,
    start_ms: int | None = None,
) -> tuple[dict[int, int], dict[int, int], str]:
    """Offsets to read per partition, and how they were found: from the first record stamped at
    or after ``from_ms`` (earliest when None) to where the stream had committed (the topic's end
    when it has not).

    Records before a timestamp lookup's offsets are all stamped before ``from_ms``; that they
    also happened before ``start_ms`` holds when producers stamp records with the event time (as
    the generator does). A sample just before the offsets checks it: a record there whose event
    time is at or after ``start_ms`` means the timestamps cannot be trusted, and the whole topic
    is read instead."""
    parts = admin.partition_offsets(settings, settings.ratings_topic)
    if not parts:
        raise CinestreamError(
            f"topic {settings.ratings_topic!r} does not exist: create it with "
            "`cinestream topics create`"
        )
    lows = {p.partition: p.low for p in parts}
    ending = {p.partition: p.high for p in parts}
    if stream_end is not None:
        ending = {p: min(e, int(stream_end.get(str(p), e))) for p, e in ending.items()}
    how = "from earliest"
    starting = dict(lows)
    if from_ms is not None:
        found = admin.offsets_for_time(settings, settings.ratings_topic, from_ms)
        bad = stamped_before_but_later(settings, found, lows, start_ms or from_ms)
        if bad is None:
            starting, how = found, f"from record timestamp {format_time(from_ms)}"
        else:
            partition, offset, event_ms = bad
            how = "from earliest (record timestamps do not follow event time)"
            log.warning(
                "record timestamps of topic %s cannot be trusted: offset %d of partition %d is "
                "stamped before %s but its event time is %s; reading the whole topic",
                settings.ratings_topic,
                offset,
                partition,
                format_time(from_ms),
                format_time(event_ms),
            )
    for p, offset in sorted(starting.items()):
        if lows[p] > 0 and offset <= lows[p]:
            log.warning(
                "partition %d of topic %s starts at offset %d: records before it were deleted "
                "(retention) and may have belonged to this range; windows whose recomputation "
                "holds fewer ratings than stored are kept as stored",
                p,
                settings.ratings_topic,
                lows[p],
            )
    return {p: min(o, ending[p]) for p, o in starting.items()}, ending, how


def run_backfill(
    spark: Any,
    settings: Settings,
    start: datetime,
    end: datetime,
    lookback_ms: int | None = 3_600_000,
) -> BackfillResult:
    """:func:`backfill_once`, run a second time when a first stream raced it (nothing was
    written the first time)."""
    try:
        return backfill_once(spark, settings, start, end, lookback_ms)
    except store_replace.BackfillRaced as exc:
        log.warning("%s; reading again", exc)
        return backfill_once(spark, settings, start, end, lookback_ms)


def backfill_once(
    spark: Any,
    settings: Settings,
    start: datetime,
    end: datetime,
    lookback_ms: int | None = 3_600_000,
) -> BackfillResult:
    """Replace the windows of ``[start, end)`` that the stream has closed with a recomputation
    from ``ratings``, under the writer rules.

    The stream's committed offsets, watermark and late counts are read first, in one snapshot:
    the backfill reads Kafka up to those offsets and replaces only windows that watermark has
    closed. The stream never adds to a closed window again, so nothing it commits meanwhile is
    lost; late ratings it counts after the snapshot stay counted as late.

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
    url = settings.resolved_database_url
    with connect(url) as conn:
        schema.ensure_schema(conn)
        snapshot = reads.stream_snapshot(conn, start_ms, end_ms)
    if snapshot.watermark_ms is not None:
        closable_ms, closed_by = snapshot.watermark_ms, "the stream's watermark"
    else:  # no stream on this checkpoint: nothing to race with, the lateness rule decides
        closable_ms = int(time.time() * 1000) - settings.allowed_lateness_s * 1000
        closed_by = "the wall clock minus the allowed lateness (no stream has committed)"
    from_ms = None if lookback_ms is None else max(0, start_ms - lookback_ms)
    starting, ending, how = read_range(settings, from_ms, snapshot.end_offsets, start_ms)
    log.info(
        "backfill [%s, %s): topic %s on %s, offsets %s (%d records, %s); closing windows that "
        "end by %s (%s); windows %s",
        format_time(start_ms),
        format_time(end_ms),
        settings.ratings_topic,
        settings.kafka_description,
        ", ".join(f"p{p} {starting[p]}..{ending[p]}" for p in sorted(ending)),
        sum(ending[p] - starting[p] for p in ending),
        how,
        format_time(closable_ms),
        closed_by,
        ",".join(settings.window_types),
    )
    parsed = parse_ratings(ratings_batch(spark, settings, starting, ending))
    cells = window_cells(events_in_range(parsed, start_ms, end_ms), settings.windows, 2**62)
    inside = cells.where(
        (F.col("window_start_ms") >= start_ms) & (F.col("window_end_ms") <= end_ms)
    )
    closed, skipped = BatchCells.from_arrow(inside.toArrow()).without_windows_ending_after(
        closable_ms
    )
    with connect(url, autocommit=True) as conn:
        windows, ratings = _replace(conn, settings, closed, snapshot, (start, end), skipped)
    result = BackfillResult(windows, ratings, skipped, time.monotonic() - began)
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


def _replace(
    conn: Any,
    settings: Settings,
    closed: BatchCells,
    snapshot: reads.StreamSnapshot,
    interval: tuple[datetime, datetime],
    skipped: int,
) -> tuple[int, int]:
    """Replace the closed windows, record the run and publish them; (windows, ratings)."""
    ratings = closed.ratings(settings.window_types[0])
    replaced = store_replace.replace_windows(
        conn,
        closed.to_csv(),
        late_before=snapshot.late_counts,
        stream_seen=snapshot.watermark_ms is not None,
    )
    for window_type, window_start_ms, recomputed, stored in replaced.kept:
        log.warning(
            "kept window %s %s as stored: the topic holds %d of its ratings now, the stream "
            "had consumed %d (its count and late ratings; deleted by retention, or records "
            "the read missed)",
            window_type,
            format_time(window_start_ms),
            recomputed,
            stored,
        )
    ratings -= sum(n for wt, _, n, _ in replaced.kept if wt == settings.window_types[0])
    store_replace.record_backfill_run(
        conn,
        *interval,
        windows=len(replaced.metrics),
        ratings=ratings,
        skipped_open=skipped,
    )
    publish_pending(conn, lambda m: publish_metrics(settings, m))
    return len(replaced.metrics), ratings
