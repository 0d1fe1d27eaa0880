"""Bounded reads of a topic: everything up to the end offsets seen at the start, or the first and
last record of each partition. For doctor, the quality checks and the tests; in the pipeline only
the DLQ read-back of the store's outbox (:class:`DlqReader`), over what was written since the
outbox's last publication."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cinestream.errors import CinestreamError
from cinestream.kafka.admin import (
    PartitionOffsets,
    client_config,
    offsets_for_time,
    partition_offsets,
)
from cinestream.settings import Settings


def read_all(settings: Settings, topic: str, timeout_s: float = 30) -> list[Any]:
    """Every message currently in ``topic`` (for tests, doctor and validation of small topics)."""
    # Read each partition from its low watermark (offset 0 may be compacted away).
    parts = partition_offsets(settings, topic)
    return read_offsets(
        settings,
        topic,
        {p.partition: p.low for p in parts},
        {p.partition: p.high for p in parts},
        timeout_s,
    )


def read_between(
    settings: Settings,
    topic: str,
    from_ms: int | None,
    to_ms: int | None,
    timeout_s: float = 120,
) -> list[Any]:
    """The messages whose record timestamps fall in ``[from_ms, to_ms)`` (open ends: the whole
    topic), found by looking offsets up by timestamp: a bounded read of a large topic."""
    parts = partition_offsets(settings, topic)
    starts = {p.partition: p.low for p in parts}
    ends = {p.partition: p.high for p in parts}
    if from_ms is not None:
        starts = offsets_for_time(settings, topic, from_ms)
    if to_ms is not None:
        ends = offsets_for_time(settings, topic, to_ms)
    return read_offsets(settings, topic, starts, ends, timeout_s)


# Errors a bounded read cannot wait out: said at once, not after a stall as "is Kafka up?".
_READ_STOPPERS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._AUTO_OFFSET_RESET,  # offset_reset="error": the records were deleted meanwhile
}


def _raise_if_refused(settings: Settings, error: Any, topic: str, group: str) -> None:
    """The one-line refusal (kafka/acls.py) of a read this principal may not do."""
    from cinestream.kafka.acls import KafkaRefused, refused_line

    if error is not None:
        connection = settings.kafka_client_config
        line = refused_line(connection, error, "READ", "topic", topic, group)
        if line is not None:
            raise KafkaRefused(line)


def read_offsets(
    settings: Settings,
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    timeout_s: float = 30,
) -> list[Any]:
    """The messages of ``[starts[p], ends[p])`` of each partition (``timeout_s``: the longest
    wait for the next message)."""
    return [m for batch in read_batches(settings, topic, starts, ends, timeout_s) for m in batch]


def read_batches(
    settings: Settings,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    stall_s: float = 60,
    group_id: str = "cinestream-reader",
    offset_reset: str = "earliest",
) -> Iterator[list[Any]]:
    """The messages of ``[starts[p], ends[p])`` of each partition, in batches as they arrive
    (up to 10,000; a partition without ``starts[p]`` reads nothing). A read that gets nothing for
    ``stall_s`` seconds, or a fatal client error, is a CinestreamError naming the topic, how far
    it got and the partitions left; transient errors (a broker restarting) are waited out.
    ``offset_reset="error"``: a start offset deleted by retention while being read is an error
    (the default, ``earliest``, moves on to the first record left)."""
    wanted = {p: (starts.get(p, e), e) for p, e in ends.items() if e > starts.get(p, e)}
    if not wanted:
        return
    total = sum(hi - lo for lo, hi in wanted.values())
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": offset_reset,
            },
        )
    )
    try:
        # An assignment to a missing topic only waits: say it now.
        listed = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if listed is None or (listed.error is not None and listed.error.code() in _READ_STOPPERS):
            why = listed.error.str() if listed is not None and listed.error else "not listed"
            _raise_if_refused(settings, listed.error if listed else None, topic, group_id)
            raise CinestreamError(f"reading {topic}: the topic does not exist ({why})")
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in wanted.items()])
        remaining = {p: end for p, (_, end) in wanted.items()}
        done, heard = 0, time.monotonic()
        while remaining:
            keep = []
            for msg in consumer.consume(10_000, timeout=1.0):
                if (error := msg.error()) is not None:
                    if error.fatal() or error.code() in _READ_STOPPERS:
                        _raise_if_refused(settings, error, topic, group_id)
                        raise CinestreamError(f"reading {topic}: {error.str()}")
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition not in remaining or offset is None or offset >= remaining[partition]:
                    continue
                keep.append(msg)
                if offset + 1 >= remaining[partition]:
                    del remaining[partition]
            if keep:
                done, heard = done + len(keep), time.monotonic()
                yield keep
            elif remaining and time.monotonic() - heard > stall_s:
                raise CinestreamError(
                    f"reading {topic} stalled at {done:,} of {total:,} records (partitions "
                    f"{sorted(remaining)} unread for {stall_s:.0f} s); is Kafka up?"
                )
    finally:
        consumer.close()


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
                t = event_time(msg.value())
                if t is not None:
                    times.append(t)
    finally:
        consumer.close()
    return times


def event_time(value: bytes | None) -> int | None:
    """The ``timestamp`` field of a rating's JSON value (None for anything else)."""
    try:
        return int(json.loads(value or b"")["timestamp"])
    except (ValueError, KeyError, TypeError):
        return None


def stamped_before_but_later(
    settings: Settings, starts: dict[int, int], lows: dict[int, int], at_ms: int, sample: int = 500
) -> tuple[int, int, int] | None:
    """Check that a timestamp lookup can be trusted: among the ``sample`` records just before
    each start offset (stamped before the lookup time), find one whose event time is at or after
    ``at_ms``. Returns (partition, offset, event time) of the first such record, or None."""
    begin = {p: max(lows.get(p, 0), o - sample) for p, o in starts.items()}
    for msg in read_offsets(settings, settings.ratings_topic, begin, starts):
        t = event_time(msg.value())
        if t is not None and t >= at_ms:
            return msg.partition(), msg.offset(), t
    return None


class DlqReader:
    """The dead-letter topic as the store's outbox reads it back
    (:class:`cinestream.store.dlq_outbox.DlqTopic`)."""

    def __init__(self, settings: Settings, timeout_s: float = 120) -> None:
        self.settings = settings
        self.name = settings.dlq_topic
        self.timeout_s = timeout_s

    def offsets(self) -> dict[int, tuple[int, int]]:
        """The low and high offset of each partition (none when the topic is missing)."""
        return {p.partition: (p.low, p.high) for p in partition_offsets(self.settings, self.name)}

    def sources(self, starts: Mapping[int, int], ends: Mapping[int, int]) -> set[tuple[int, int]]:
        """``(source_partition, source_offset)`` of the DLQ records in ``[starts, ends)`` whose
        source is this pipeline's ratings topic (records of other sources are passed over)."""
        found: set[tuple[int, int]] = set()
        for msg in read_offsets(self.settings, self.name, dict(starts), dict(ends), self.timeout_s):
            source = dlq_source(msg.value())
            if source is not None and source[0] == self.settings.ratings_topic:
                found.add(source[1:])
        return found


def dlq_source(value: bytes | None) -> tuple[str, int, int] | None:
    """``(source_topic, source_partition, source_offset)`` of a DLQ record's JSON value (None
    for anything else)."""
    try:
        record = json.loads(value or b"")
        return (
            str(record["source_topic"]),
            int(record["source_partition"]),
            int(record["source_offset"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
