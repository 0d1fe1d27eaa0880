"""`cinestream audit` on the real stack: a correct range passes; a window altered in PostgreSQL
and one altered in `metrics` are found and named with their offsets; late ratings are named
with the backfill that restores them, and after it the range passes again."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from cinestream.schemas import format_time
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

MINUTE = 60_000


def audit(pipeline: Pipeline, start: int, end: int):  # type: ignore[no-untyped-def]
    return pipeline.cli("audit", "--start", format_time(start), "--end", format_time(end))


def backfill(pipeline: Pipeline, start: int, end: int) -> None:
    pipeline.cli(
        "backfill",
        "--start",
        format_time(start),
        "--end",
        format_time(end),
        "--lookback",
        "all",
        check=True,
    )


def test_audit_finds_what_differs_and_passes_after_the_backfill(pipeline: Pipeline) -> None:
    # Five minutes of ratings: the watermark (newest event - 120 s) closes minutes 0 to 2.
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    end = start + 6 * MINUTE
    pipeline.produce_historical(5_000, start, 5 * MINUTE)
    pipeline.produce_raw([(b"bad", b"not json"), (b"bad", None)])
    pipeline.process(check=True)

    ok = audit(pipeline, start, end)
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert (
        ok.stdout.strip()
        .splitlines()[-1]
        .startswith(f"OK audit [{format_time(start)}, {format_time(end)}): 5 windows, 5000 ratings")
    ), ok.stdout[-2000:]

    # Minute 0 altered in PostgreSQL, minute 1 in the metrics topic (a newer record, same key).
    assert pipeline.db(
        "UPDATE window_metrics SET count = count - 1 WHERE window_start = to_timestamp(%s) "
        "RETURNING count",
        (start / 1000,),
    ) == [(999,)]
    second = pipeline.topic_windows()[format_time(start + MINUTE)]
    producer = Producer(pipeline.settings.kafka_client_config)
    producer.produce(
        pipeline.settings.metrics_topic,
        key=f"tumbling_1min|{second['window_start']}".encode(),
        value=json.dumps({**second, "p95_rating": 0.5}).encode(),
    )
    assert producer.flush(30) == 0
    bad = audit(pipeline, start, end)
    assert bad.returncode == 1
    diffs = [line for line in bad.stdout.splitlines() if line.startswith("DIFF")]
    assert len(diffs) == 2, bad.stdout[-3000:]
    assert diffs[0].startswith(f"DIFF tumbling_1min {format_time(start)} postgres: count 999 != ")
    assert "(its ratings: p0 0.." in diffs[0], diffs[0]
    assert diffs[1].startswith(f"DIFF tumbling_1min {format_time(start + MINUTE)} metrics topic")
    assert f"p95_rating 0.5 != {second['p95_rating']}" in diffs[1]
    assert bad.stdout.splitlines()[-1].startswith("FAIL audit") and "2 differ" in bad.stdout

    # A backfill of the two closed minutes recomputes and republishes them: exact again.
    backfill(pipeline, start, start + 2 * MINUTE)
    again = audit(pipeline, start, end)
    assert again.returncode == 0, again.stdout[-3000:]

    # Ten ratings for minute 0 after the watermark closed it: counted late, not added. The
    # audit names them with the backfill that restores them.
    pipeline.produce_historical(10, start + 1_000, 10_000, seed=12)
    pipeline.process(check=True)
    late = audit(pipeline, start, end)
    assert late.returncode == 1
    lines = [x for x in late.stdout.splitlines() if x.startswith("DIFF")]
    assert len(lines) == 1, late.stdout[-3000:]
    line = lines[0]
    assert line.startswith(f"DIFF tumbling_1min {format_time(start)} postgres: 10 late ratings")
    assert f"`cinestream backfill --start {format_time(start)} --end " in line
    backfill(pipeline, start, start + MINUTE)
    restored = audit(pipeline, start, end)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert "5 windows, 5010 ratings" in restored.stdout


def test_a_window_not_yet_published_is_pending_not_a_difference(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    end = start + 4 * MINUTE
    pipeline.produce_historical(3_000, start, 3 * MINUTE)
    pipeline.process(check=True)
    # Publication lags the commit: PostgreSQL committed minute 1's newest value (its version is
    # ahead of the published one) while the topic's last record for it is an older value.
    second = pipeline.topic_windows()[format_time(start + MINUTE)]
    producer = Producer(pipeline.settings.kafka_client_config)
    producer.produce(
        pipeline.settings.metrics_topic,
        key=f"tumbling_1min|{second['window_start']}".encode(),
        value=json.dumps({**second, "count": second["count"] - 7}).encode(),
    )
    assert producer.flush(30) == 0
    assert pipeline.db(
        "UPDATE window_state SET version = published_version + 1 WHERE window_type = "
        "'tumbling_1min' AND window_start_ms = %s RETURNING version - published_version",
        (start + MINUTE,),
    ) == [(1,)]

    pending = audit(pipeline, start, end)
    assert pending.returncode == 0, pending.stdout[-3000:]
    lines = pending.stdout.splitlines()
    assert not [x for x in lines if x.startswith("DIFF")], pending.stdout[-3000:]
    (line,) = [x for x in lines if x.startswith("PENDING")]
    assert line.startswith(f"PENDING tumbling_1min {format_time(start + MINUTE)} metrics topic: ")
    assert "not published yet after 15 s: PostgreSQL committed version" in line
    assert (
        lines[-1].startswith("OK audit")
        and "(1 not yet in the metrics topic: PENDING)" in lines[-1]
    )

    # The next processor run publishes what is pending first: exact again, nothing pending.
    pipeline.process(check=True)
    again = audit(pipeline, start, end)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "PENDING" not in again.stdout
    assert again.stdout.splitlines()[-1].endswith("every window equals its recomputation")
