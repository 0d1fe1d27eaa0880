"""Bounded reads of a topic (kafka.read.read_batches): what a read cannot wait out is said at
once, in one line, not after a minute's stall as "is Kafka up?"."""

from __future__ import annotations

import time

import pytest

from cinestream.errors import CinestreamError
from cinestream.kafka.read import read_offsets
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def test_a_bounded_read_returns_exactly_the_range(pipeline: Pipeline) -> None:
    from confluent_kafka import Producer

    topic = pipeline.settings.ratings_topic
    producer = Producer(pipeline.settings.kafka_client_config)
    for partition in range(3):
        for i in range(6):
            producer.produce(topic, b"v%d" % i, b"k", partition=partition)
    assert producer.flush(30) == 0
    assert read_offsets(pipeline.settings, topic, {}, {}) == []
    got = read_offsets(pipeline.settings, topic, {0: 1, 1: 1, 2: 5}, {0: 4, 1: 6, 2: 5})
    assert sorted((m.partition(), m.offset()) for m in got) == [
        *((0, o) for o in range(1, 4)),
        *((1, o) for o in range(1, 6)),
    ]


def test_a_missing_topic_is_said_at_once(pipeline: Pipeline) -> None:
    began = time.monotonic()
    with pytest.raises(CinestreamError, match="reading no_such_topic_here: the topic does not"):
        read_offsets(pipeline.settings, "no_such_topic_here", {0: 0}, {0: 5}, timeout_s=60)
    assert time.monotonic() - began < 30
