"""Every invalid record is in the DLQ once (issue 19's invariant), also when the processor is
killed with ``kill -9`` in the middle of a batch: its DLQ messages are committed with the counts
(the store's outbox) and published after the commit, and a publication cut short is read back."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from cinestream.kafka.read import read_all
from cinestream.store.connection import STORE_LOCK
from cinestream.stream.checkpoint_log import latest_batch
from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import events_from_messages, recompute

pytestmark = pytest.mark.integration

MINUTE = 60_000
SMALL_BATCHES = {"CINESTREAM_MAX_OFFSETS_PER_TRIGGER": "3000"}


def _invalid(tag: str, n: int) -> list[tuple[bytes | None, bytes | None]]:
    return [(f"{tag}-{i}".encode(), f"not json {tag} {i}".encode()) for i in range(n)]


def _invalid_in_ratings(pipeline: Pipeline) -> set[tuple[int, int]]:
    """(partition, offset) of every record of ``ratings`` that is not JSON."""
    s = pipeline.settings
    return {
        (m.partition(), m.offset())
        for m in read_all(s, s.ratings_topic)
        if m.value() is None or m.value().startswith(b"not json")
    }


def _valid_events(pipeline: Pipeline) -> list[tuple[int, int, float, int]]:
    s = pipeline.settings
    return events_from_messages(
        [m for m in read_all(s, s.ratings_topic) if not m.value().startswith(b"not json")]
    )


def _in_dlq(pipeline: Pipeline) -> Counter[tuple[int, int]]:
    """How often each (source_partition, source_offset) is in the DLQ."""
    s = pipeline.settings
    seen: Counter[tuple[int, int]] = Counter()
    for msg in read_all(s, s.dlq_topic):
        record = json.loads(msg.value())
        assert record["source_topic"] == s.ratings_topic
        seen[(record["source_partition"], record["source_offset"])] += 1
    return seen


def _assert_each_invalid_record_once(pipeline: Pipeline, expected: int) -> None:
    invalid = _invalid_in_ratings(pipeline)
    assert len(invalid) == expected
    seen = _in_dlq(pipeline)
    doubled = {c: n for c, n in seen.items() if n > 1}
    assert not doubled, f"{len(doubled)} invalid records more than once in the DLQ: {doubled}"
    assert set(seen) == invalid


def _end_lock_waiters(conn: psycopg.Connection[Any]) -> None:
    """Terminate every session waiting for a lock (the killed processor's stalled statement)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )


def test_a_processor_killed_before_its_commit_finished_puts_each_invalid_record_in_the_dlq_once(
    pipeline: Pipeline,
) -> None:
    # A batch with invalid records is handed to the background commit, which the store lock
    # stalls; Spark marks the batch done and reads the next. Killed there, after the point where
    # the processor used to publish the batch's DLQ messages (before the hand-off), the restart
    # reads the batch again: its invalid records must not reach the DLQ a second time.
    start = (int(time.time() * 1000) // MINUTE - 100) * MINUTE
    pipeline.produce_historical(4_000, start, 4 * MINUTE, seed=1)
    pipeline.produce_raw(_invalid("first", 12))
    pipeline.process(extra_env=SMALL_BATCHES, check=True)
    _assert_each_invalid_record_once(pipeline, 12)

    pipeline.produce_raw(_invalid("second", 15))
    pipeline.produce_historical(4_000, start + 4 * MINUTE, 4 * MINUTE, seed=2)
    pipeline.produce_raw(_invalid("third", 9))
    commits = Path(urlsplit(pipeline.settings.checkpoint_dir).path) / "commits"
    committed = latest_batch([p.name for p in commits.iterdir()])
    assert committed is not None
    handed_off = committed + 1

    with psycopg.connect(pipeline.settings.resolved_database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (STORE_LOCK,))
        proc = pipeline.start_cli(
            "process", "--trigger", "available-now", extra_env=SMALL_BATCHES, log_name="dlq-kill"
        )
        deadline = time.monotonic() + 240
        while latest_batch([p.name for p in commits.iterdir()]) != handed_off:
            assert proc.poll() is None, open(proc.log_path).read()[-3000:]  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"Spark never marked batch {handed_off} done"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        _end_lock_waiters(blocker)
        blocker.execute("SELECT pg_advisory_unlock(%s)", (STORE_LOCK,))
    assert pipeline.db("SELECT max(batch_id) FROM processor_batches") == [(committed,)]

    rerun = pipeline.process("--wait-for-lock", "30", extra_env=SMALL_BATCHES, check=True)
    assert f"batch {handed_off} is marked done in the checkpoint" in rerun.stdout
    _assert_each_invalid_record_once(pipeline, 36)
    assert pipeline.db("SELECT count(*) FROM dlq_outbox") == [(0,)]
    events = _valid_events(pipeline)
    assert len(events) == pipeline.total_counted() == 8_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))
    assert pipeline.db("SELECT sum(valid), sum(invalid) FROM processor_batches") == [(8_000, 36)]


def test_a_processor_killed_after_kafka_took_the_dlq_messages_does_not_publish_them_again(
    pipeline: Pipeline,
) -> None:
    # The batch is committed, its DLQ messages published and acknowledged; the processor dies
    # before the outbox's DELETE commits (a trigger stalls it). The next start finds the
    # publication in flight, reads the DLQ back and publishes nothing twice.
    start = (int(time.time() * 1000) // MINUTE - 100) * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE, seed=3)
    pipeline.produce_raw(_invalid("bad", 20))
    pipeline.produce_historical(1_000, start + 2 * MINUTE, MINUTE, seed=4)
    url = pipeline.settings.resolved_database_url
    stall = 0x5354414C  # "STAL"
    with psycopg.connect(url, autocommit=True) as blocker:
        blocker.execute(
            f"""
            CREATE FUNCTION test_stall_dlq_delete() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock({stall}); RETURN NULL; END $$;
            CREATE TRIGGER test_stall_dlq_delete BEFORE DELETE ON dlq_outbox
            FOR EACH STATEMENT EXECUTE FUNCTION test_stall_dlq_delete();
            """
        )
        try:
            blocker.execute("SELECT pg_advisory_lock(%s)", (stall,))
            proc = pipeline.start_cli(
                "process", "--trigger", "available-now", log_name="dlq-delete-stalled"
            )
            deadline = time.monotonic() + 240
            while not blocker.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'DELETE FROM dlq_outbox%%'"
            ).fetchall():
                assert proc.poll() is None, open(proc.log_path).read()[-3000:]  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the outbox's DELETE never started"
                time.sleep(0.2)
            assert sum(_in_dlq(pipeline).values()) == 20  # Kafka has them
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            _end_lock_waiters(blocker)
            blocker.execute("SELECT pg_advisory_unlock(%s)", (stall,))
        finally:
            blocker.execute("DROP TRIGGER IF EXISTS test_stall_dlq_delete ON dlq_outbox")
            blocker.execute("DROP FUNCTION IF EXISTS test_stall_dlq_delete()")
    assert pipeline.db("SELECT count(*) FROM dlq_outbox") == [(20,)]
    assert pipeline.db("SELECT in_flight FROM dlq_publication") == [(True,)]

    rerun = pipeline.process("--wait-for-lock", "30", check=True)
    assert "20 invalid records of the store's outbox were already in" in rerun.stdout
    _assert_each_invalid_record_once(pipeline, 20)
    assert pipeline.db("SELECT count(*) FROM dlq_outbox") == [(0,)]
    events = _valid_events(pipeline)
    assert len(events) == pipeline.total_counted() == 3_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
