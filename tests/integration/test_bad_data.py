"""Malformed records go to the DLQ with a reason; a recreated topic is detected, never skipped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cinestream.kafka import admin
from cinestream.kafka.read import read_all
from cinestream.schemas import DLQ_RAW_PREFIX_BYTES
from cinestream.store import schema
from cinestream.store.connection import connect
from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import recompute
from tests.shared_stack import SPARK_SUBMIT_OPTS

pytestmark = pytest.mark.integration

MINUTE = 60_000

# Ten kinds of malformed records, with the start of the reason each must get.
MALFORMED: list[tuple[bytes | None, str]] = [
    (b"this is not json", "value is not a valid JSON object"),
    (b"\xff\xfe\xfd binary", "value is not valid UTF-8"),
    (None, "value is null"),
    (b'{"movie_id": 5, "rating": 4.0, "timestamp": %d}', "user_id is missing or null"),
    (
        b'{"user_id": "abc", "movie_id": 5, "rating": 4.0, "timestamp": %d}',
        "user_id must be an integer",
    ),
    (b'{"user_id": 3, "movie_id": 0, "rating": 4.0, "timestamp": %d}', "movie_id must be >= 1"),
    (
        b'{"user_id": 3, "movie_id": 5, "rating": 3.7, "timestamp": %d}',
        "rating must be one of 0.5, 1.0, ..., 5.0",
    ),
    (
        b'{"user_id": 3, "movie_id": 5, "rating": 9, "timestamp": %d}',
        "rating must be one of 0.5, 1.0, ..., 5.0",
    ),
    (
        b'{"user_id": 3, "movie_id": 5, "rating": 4.0, "timestamp": 12345}',
        "timestamp must be epoch milliseconds",
    ),
    (b"[3, 5, 4.0]", "value is not a valid JSON object"),
]


def test_malformed_records_go_to_the_dlq_with_reasons(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(3_000, start, 3 * MINUTE)
    bad = [
        (b"k%d" % i, v % (start + MINUTE) if v and b"%d" in v else v)
        for i, (v, _) in enumerate(MALFORMED)
    ]
    # 30 invalid records mixed in, and one longer than a DLQ message keeps (its first 64 KiB).
    too_long = b"[" + b"1," * 40_000 + b"1]"
    pipeline.produce_raw(bad * 3 + [(b"k-long", too_long)])
    pipeline.produce_historical(2_000, start + 3 * MINUTE, 2 * MINUTE, seed=9)

    result = pipeline.process(check=True)
    assert "31 invalid" in result.stdout

    dlq = read_all(pipeline.settings, pipeline.settings.dlq_topic)
    assert len(dlq) == 31
    (long_record,) = [json.loads(m.value()) for m in dlq if m.key() == b"k-long"]
    assert long_record["error"] == "value is not a valid JSON object"
    assert long_record["raw"].encode() == too_long[:DLQ_RAW_PREFIX_BYTES]
    assert long_record["raw_length"] == len(too_long) == 80_003
    by_key: dict[bytes, list[dict]] = {}
    for msg in dlq:
        by_key.setdefault(msg.key(), []).append(json.loads(msg.value()))
    for i, (value, reason) in enumerate(MALFORMED):
        records = by_key[b"k%d" % i]
        assert len(records) == 3
        for record in records:
            assert record["error"].startswith(reason), (record, reason)
            assert record["source_topic"] == pipeline.settings.ratings_topic
            assert isinstance(record["source_offset"], int)
            if value is not None and record["raw_encoding"] == "utf-8":
                assert record["raw"].encode() == bad[i][1]

    valid = [e for e in _valid_events(pipeline)]
    assert len(valid) == 5_000
    assert pipeline.total_counted() == 5_000
    assert_windows_equal(pipeline.db_windows(), recompute(valid))
    assert pipeline.db("SELECT invalid_total FROM processor_state")[0][0] == 31


def test_a_flood_of_long_invalid_records_falls_back_to_the_spark_sink(pipeline: Pipeline) -> None:
    # 40 invalid records of 60 kB each (each short enough to come with the cells) are 2.4 MB of
    # DLQ messages, more than the 1 MiB this driver may collect: the batch is counted again
    # without them and they are written by Spark's Kafka sink. Nothing is lost either way.
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE)
    long = b"[" + b"1," * 30_000 + b"1]"
    pipeline.produce_raw([(b"k-flood-%d" % i, long) for i in range(40)])

    small_driver = {"SPARK_SUBMIT_OPTS": f"{SPARK_SUBMIT_OPTS} -Dspark.driver.maxResultSize=1m"}
    result = pipeline.process(extra_env=small_driver, check=True)
    assert "exceed spark.driver.maxResultSize" in result.stdout, result.stdout[-3000:]
    assert "40 invalid" in result.stdout

    dlq = read_all(pipeline.settings, pipeline.settings.dlq_topic)
    assert sorted(m.key() for m in dlq) == sorted(b"k-flood-%d" % i for i in range(40))
    assert {json.loads(m.value())["error"] for m in dlq} == {"value is not a valid JSON object"}
    assert all(json.loads(m.value())["raw"].encode() == long for m in dlq)
    assert pipeline.total_counted() == 2_000
    assert_windows_equal(pipeline.db_windows(), recompute(_valid_events(pipeline)))


def _valid_events(pipeline: Pipeline) -> list[tuple[int, int, float, int]]:
    events = []
    for msg in read_all(pipeline.settings, pipeline.settings.ratings_topic):
        if msg.key().startswith(b"k"):
            continue  # the malformed ones, keyed k...
        body = json.loads(msg.value())
        events.append((body["user_id"], body["movie_id"], body["rating"], body["timestamp"]))
    return events


def test_topic_recreated_under_an_old_checkpoint_is_a_clear_error(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE)
    pipeline.process(check=True)

    admin.delete_topics(pipeline.settings)
    admin.create_topics(pipeline.settings)
    pipeline.produce_historical(500, start + 3 * MINUTE, MINUTE)

    result = pipeline.process()
    assert result.returncode == 3, result.stdout[-3000:]
    error = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
    assert len(error) == 1
    assert "deleted and recreated" in error[0]
    # Both ways on are named: keep the old topic's windows, or start over.
    assert "cinestream reset --checkpoint-only" in error[0]
    assert "cinestream reset --keep-topics" in error[0]
    assert pipeline.total_counted() == 2_000  # nothing skipped, nothing half-applied

    doctor = pipeline.cli("doctor")
    assert doctor.returncode == 1
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("FAIL checkpoint"))
    assert "deleted and recreated" in line and "cinestream reset --keep-topics" in line

    # The named fix works: re-read the new topic from the start.
    pipeline.cli("reset", "--yes", "--keep-topics", check=True)
    pipeline.process(check=True)
    assert pipeline.total_counted() == 500


def test_store_emptied_under_a_kept_checkpoint_is_a_clear_error(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(1_000, start, 2 * MINUTE)
    pipeline.process(check=True)
    # Someone empties the tables (or restores an older backup) but keeps the checkpoint: resuming
    # would never count the ratings of the batches the checkpoint calls done.
    with connect(pipeline.settings.resolved_database_url) as conn:
        schema.truncate_all(conn)

    pipeline.expect_checkpoint_mismatch(
        pipeline.process(), "missing from the store", "PostgreSQL holds none of them"
    )

    # The named fix: without the checkpoint the processor starts where the store ends (here:
    # nowhere, the store is empty), so the topic is read again.
    pipeline.cli("reset", "--yes", "--checkpoint-only", check=True)
    pipeline.process(check=True)
    assert pipeline.total_counted() == 1_000


def test_topic_recreated_under_a_running_continuous_processor_stops_it(pipeline: Pipeline) -> None:
    # The restart after the query's failure checks the start plan again, as a start does.
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE)
    proc = pipeline.start_cli(
        "process", "--trigger", "continuous", "--interval", "1s", log_name="recreated"
    )
    try:
        pipeline.wait_for_total(2_000, proc=proc)
        admin.delete_topics(pipeline.settings)
        admin.create_topics(pipeline.settings)
        pipeline.produce_historical(500, start + 3 * MINUTE, MINUTE)
        assert proc.wait(240) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    log = Path(proc.log_path).read_text()  # type: ignore[attr-defined]
    assert "deleted and recreated" in log and "cinestream reset --keep-topics" in log
    assert pipeline.total_counted() == 2_000
