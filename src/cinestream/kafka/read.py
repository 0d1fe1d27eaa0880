"""Bounded reads of a topic: everything up to the end offsets seen at the start, or the first and
last record of each partition. For doctor, the quality checks and the tests; never the pipeline."""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from cinestream.errors import CinestreamError
from cinestream.kafka.admin import PartitionOffsets, client_config, partition_offsets
from cinestream.settings import Settings


def read_all(settings: Settings, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every message currently in ``topic`` (for tests, doctor and validation of small topics)."""
    # Read each non-empty partition from its low watermark (offset 0 may be compacted away).
    parts = [p for p in partition_offsets(settings, topic) if p.high > p.low]
    ends = {p.partition: p.high for p in parts}
    if not ends:
        return []
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "cinestream-reader",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
        )
    )
    consumer.assign([TopicPartition(topic, p.partition, p.low) for p in parts])
    messages: list[Any] = []
    remaining = dict(ends)
    deadline = time.monotonic() + timeout_s
    try:
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                offset, partition = msg.offset(), msg.partition()
                if msg.error() or offset is None or partition is None:
                    continue
                messages.append(msg)
                if offset + 1 >= remaining.get(partition, 0):
                    remaining.pop(partition, None)
    finally:
        consumer.close()
    if remaining:
        raise CinestreamError(f"timed out reading {topic}: partitions {sorted(remaining)} not done")
    return messages


def edge_event_times(settings: Settings, parts: list[PartitionOffsets]) -> list[int]:
    """Event times of the first and last record of each partition of ``ratings`` (two reads
    each; records that are not ratings are passed over)."""
    consumer = Consumer(
        client_config(settings, **{"group.id": "cinestream-doctor", "enable.auto.commit": False})
    )
    times: list[int] = []
    try:
        for p in parts:
            for offset in {p.low, p.high - 1}:
                if offset < p.low or offset >= p.high:
                    continue
                consumer.assign([TopicPartition(settings.ratings_topic, p.partition, offset)])
                msg = consumer.poll(5)
                if msg is None or msg.error():
                    continue
                try:
                    times.append(int(json.loads(msg.value() or b"")["timestamp"]))
                except (ValueError, KeyError, TypeError):
                    continue
    finally:
        consumer.close()
    return times
