"""Invalid records up to the largest that `ratings` accepts reach the DLQ, bounded, exactly once,
and never stop the stream (issue 19: an 800 KB binary value used to stop it for good)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from cinestream.kafka.read import read_all
from cinestream.schemas import DLQ_RAW_PREFIX_BYTES, RATINGS_MAX_MESSAGE_BYTES
from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import events_from_messages, recompute
from tests.shared_stack import SPARK_SUBMIT_OPTS

pytestmark = pytest.mark.integration

MINUTE = 60_000
NOT_JSON = "value is not a valid JSON object"

# key -> (value, reason, the bytes of the value that `raw` keeps)
BINARY = b"\xff" + bytes(range(256)) * 3_200  # 819,201 bytes, not UTF-8: base64 grows it 4/3
TEXT = b"[ " + "\u20ac".encode() * 300_000  # 900,002 bytes of UTF-8, cut 2 bytes into a euro
CONTROL = b"\x01" * 80_000  # UTF-8 that JSON writes six times as long (\u0001)
BIG_KEY = b"K" * 960_000  # with CONTROL, the record is just under what `ratings` accepts
OVERSIZED: dict[bytes, tuple[bytes, str, bytes]] = {
    b"binary": (BINARY, "value is not valid UTF-8", BINARY[:DLQ_RAW_PREFIX_BYTES]),
    b"text": (TEXT, NOT_JSON, TEXT[: DLQ_RAW_PREFIX_BYTES - 2]),
    BIG_KEY: (CONTROL, NOT_JSON, CONTROL[:DLQ_RAW_PREFIX_BYTES]),
}


def _produce_oversized(pipeline: Pipeline) -> None:
    # The default producer takes 1,000,000 bytes: this one takes what the topic does.
    producer = Producer(
        {
            **pipeline.settings.kafka_client_config,
            "enable.idempotence": True,
            "message.max.bytes": RATINGS_MAX_MESSAGE_BYTES,
        }
    )
    for key, (value, _, _) in OVERSIZED.items():
        producer.produce(pipeline.settings.ratings_topic, value, key)
    assert producer.flush(60) == 0


def _run_and_check(pipeline: Pipeline, **process: Any) -> str:
    start = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
    pipeline.produce_historical(1_500, start, 2 * MINUTE)
    _produce_oversized(pipeline)
    pipeline.produce_historical(1_500, start + 2 * MINUTE, 2 * MINUTE, seed=9)

    result = pipeline.process(check=True, **process)
    assert "3 invalid" in result.stdout, result.stdout[-3000:]

    s = pipeline.settings
    ratings = read_all(s, s.ratings_topic)
    origin = {m.key(): (m.partition(), m.offset()) for m in ratings if m.key() in OVERSIZED}
    assert len(origin) == 3
    dlq = read_all(s, s.dlq_topic)
    assert sorted(m.key() for m in dlq) == sorted(OVERSIZED)  # each exactly once
    for message in dlq:
        value, reason, kept = OVERSIZED[message.key()]
        record = json.loads(message.value())
        assert record["error"] == reason
        assert (record["raw_length"], record["raw_sha256"]) == (
            len(value),
            hashlib.sha256(value).hexdigest(),
        )
        if record["raw_encoding"] == "base64":
            assert base64.b64decode(record["raw"], validate=True) == kept
        else:
            assert (record["raw_encoding"], record["raw"].encode()) == ("utf-8", kept)
        partition, offset = origin[message.key()]
        assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
            s.ratings_topic,
            partition,
            offset,
        )
    # The record with the big key is larger than Kafka's default 1 MiB, and it went through.
    (big,) = [m for m in dlq if m.key() == BIG_KEY]
    assert len(big.key()) + len(big.value()) > 2**20

    valid = events_from_messages([m for m in ratings if m.key() not in OVERSIZED])
    assert len(valid) == 3_000
    assert pipeline.total_counted() == 3_000
    assert_windows_equal(pipeline.db_windows(), recompute(valid))
    return result.stdout


def test_oversized_invalid_records_reach_the_dlq_bounded(pipeline: Pipeline) -> None:
    stdout = _run_and_check(pipeline)
    assert "maxResultSize" not in stdout  # they came with the cells, in the batch's one pass


def test_oversized_invalid_records_reach_the_dlq_through_the_spark_sink(
    pipeline: Pipeline,
) -> None:
    # A driver that may collect less than one of their DLQ messages: Spark's Kafka sink writes
    # them, and its producer takes a DLQ record of any size the topic does.
    small_driver = {"SPARK_SUBMIT_OPTS": f"{SPARK_SUBMIT_OPTS} -Dspark.driver.maxResultSize=1m"}
    stdout = _run_and_check(pipeline, extra_env=small_driver)
    assert "exceed spark.driver.maxResultSize" in stdout, stdout[-3000:]
