"""The batch backfill equals the stream for complete windows and restores late records."""

from __future__ import annotations

import time

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
