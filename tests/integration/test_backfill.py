"""The batch backfill equals the stream for complete windows and restores late records."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from cinestream.schemas import format_time
from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import recompute

pytestmark = pytest.mark.integration

MINUTE = 60_000


def test_backfill_equals_stream_and_restores_late_records(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(6_000, start, 6 * MINUTE)
    pipeline.process(check=True)
    stream = pipeline.db_windows()
    assert len(stream) == 6

    # Backfill a range that covers minutes 1..4. The stream's watermark (newest event - 120 s)
    # has closed minutes 0..2 only: 1 and 2 are replaced and come out identical, 3 and 4 are
    # still the stream's and are left alone (wall-clock age does not matter).
    result = pipeline.cli(
        "backfill",
        "--start",
        format_time(start + MINUTE),
        "--end",
        format_time(start + 5 * MINUTE),
        check=True,
    )
    assert '"windows": 2, "ratings": 2000, "skipped_open": 2' in result.stdout
    assert "closing windows that end by" in result.stdout and "stream's watermark" in result.stdout
    after = pipeline.db_windows()
    for key, window in stream.items():
        for field in (
            "count",
            "avg_rating",
            "p50_rating",
            "p95_rating",
            "top_movies",
            "window_end",
        ):
            assert after[key][field] == window[field]
    assert pipeline.total_counted() == 6_000

    # 40 late ratings for minute 0, long after the watermark passed it.
    pipeline.produce_historical(40, start + 1_000, 50_000, seed=11)
    late_run = pipeline.process(check=True)
    assert "40 late" in late_run.stdout
    assert pipeline.total_counted() == 6_000
    assert pipeline.db("SELECT late_total FROM processor_state")[0][0] == 40

    # A backfill over minute 0 restores them; every window equals the raw events again.
    pipeline.cli(
        "backfill",
        "--start",
        format_time(start),
        "--end",
        format_time(start + MINUTE),
        "--lookback",
        "all",
        check=True,
    )
    events = pipeline.raw_events()
    assert len(events) == 6_040
    assert pipeline.total_counted() == 6_040
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))

    # Running the same backfill again changes nothing.
    pipeline.cli(
        "backfill",
        "--start",
        format_time(start),
        "--end",
        format_time(start + MINUTE),
        "--lookback",
        "all",
        check=True,
    )
    assert_windows_equal(pipeline.db_windows(), recompute(events))


def _hour_windows(pipeline: Pipeline, hour: int) -> dict[str, Any]:
    lo, hi = format_time(hour), format_time(hour + 3_600_000)
    return {k: v for k, v in pipeline.db_windows().items() if lo <= k < hi}


def test_backfill_reads_only_from_the_timestamp_lookup(pipeline: Pipeline) -> None:
    hour = (int(time.time() * 1000) // 3_600_000 - 3) * 3_600_000
    # Generator records are stamped with their event time: two hours before the backfilled one,
    # then the hour itself.
    pipeline.produce_historical(2_000, hour - 2 * 3_600_000, 30 * MINUTE, seed=4)
    pipeline.produce_historical(1_000, hour + 5 * MINUTE, 10 * MINUTE, seed=5)
    window = ["--start", format_time(hour), "--end", format_time(hour + 3_600_000)]
    run = pipeline.cli("backfill", *window, "--lookback", "15min", check=True)
    assert f"from record timestamp {format_time(hour - 15 * MINUTE)}" in run.stdout
    assert "(1000 records," in run.stdout  # the earlier hours were not read
    assert '"ratings": 1000' in run.stdout
    in_hour = [e for e in pipeline.raw_events() if hour <= e[3] < hour + 3_600_000]
    assert_windows_equal(_hour_windows(pipeline, hour), recompute(in_hour))


def test_backfill_reads_everything_when_record_timestamps_do_not_follow_event_time(
    pipeline: Pipeline,
) -> None:
    from confluent_kafka import Producer

    hour = (int(time.time() * 1000) // 3_600_000 - 3) * 3_600_000
    pipeline.produce_historical(2_000, hour - 2 * 3_600_000, 30 * MINUTE, seed=4)
    # A producer with a slow clock (or a replay keeping old stamps): ratings of the hour stamped
    # two hours early, written just before the hour's generator records.
    producer = Producer({"bootstrap.servers": pipeline.settings.kafka_bootstrap})
    for m in range(1, 301):
        value = {"user_id": 1, "movie_id": m, "rating": 4.0, "timestamp": hour + 20 * MINUTE + m}
        producer.produce(
            pipeline.settings.ratings_topic,
            json.dumps(value).encode(),
            timestamp=hour - 2 * 3_600_000 + 40 * MINUTE,
        )
    assert producer.flush(30) == 0
    pipeline.produce_historical(1_000, hour + 5 * MINUTE, 10 * MINUTE, seed=5)
    window = ["--start", format_time(hour), "--end", format_time(hour + 3_600_000)]
    run = pipeline.cli("backfill", *window, "--lookback", "15min", check=True)
    assert "cannot be trusted" in run.stdout and "reading the whole topic" in run.stdout
    assert "from earliest (record timestamps do not follow event time)" in run.stdout
    assert '"ratings": 1300' in run.stdout
    in_hour = [e for e in pipeline.raw_events() if hour <= e[3] < hour + 3_600_000]
    assert len(in_hour) == 1_300
    assert_windows_equal(_hour_windows(pipeline, hour), recompute(in_hour))
