"""The seed's story on the real stack: a backlog produced before the processor ever ran."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import recompute

pytestmark = pytest.mark.integration

MINUTE = 60_000


def test_backlog_then_rerun_then_more(pipeline: Pipeline) -> None:
    # 40,400 ratings over ~40 minutes of event time, all in Kafka before any processor runs.
    start = (int(time.time() * 1000) // MINUTE - 90) * MINUTE
    pipeline.produce_historical(40_400, start, 40 * MINUTE + 13_000)

    first = pipeline.process(check=True)
    # The first run says where it starts: earliest, with the resolved offsets and the backlog.
    assert "first run, starting from earliest" in first.stdout
    assert "40400 records to process" in first.stdout

    events = pipeline.raw_events()
    assert len(events) == 40_400
    expected = recompute(events)
    assert len(expected) == 41  # 40 full minutes and the 13 s after them
    db = pipeline.db_windows()
    assert sum(w["count"] for w in db.values()) == 40_400
    assert_windows_equal(db, expected)
    assert_windows_equal(pipeline.topic_windows(), expected)

    # Run again: nothing new, nothing doubled.
    batches_before = pipeline.db("SELECT count(*) FROM processor_batches")[0][0]
    again = pipeline.process(check=True)
    assert "resuming from checkpoint" in again.stdout and "lag 0" in again.stdout
    assert pipeline.db("SELECT count(*) FROM processor_batches")[0][0] == batches_before
    assert pipeline.total_counted() == 40_400

    # 1,000 more, later in event time: totals 41,400, every window still exact.
    pipeline.produce_historical(1_000, start + 41 * MINUTE, 2 * MINUTE, seed=8)
    pipeline.process(check=True)
    events = pipeline.raw_events()
    assert len(events) == 41_400
    assert pipeline.total_counted() == 41_400
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))

    # doctor agrees: no lag, windows present, nothing failed.
    doctor = pipeline.cli("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "lag 0" in doctor.stdout
    assert "(41400 ratings)" in doctor.stdout
