"""Producing to Kafka: the one producer configuration, and publishing metric and DLQ records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Producer

from cinestream.errors import ServiceUnavailable
from cinestream.kafka import acls
from cinestream.metrics import WindowMetric
from cinestream.schemas import DLQ_MAX_MESSAGE_BYTES, metric_key
from cinestream.settings import Settings

# librdkafka reports every record delivered or failed within MESSAGE_TIMEOUT_MS. A publish waits
# longer than that, so it never returns while a record is still queued: a record left queued
# after a publish gave up could reach the topic after a newer version of its window, and the
# last record per key would then be stale.
MESSAGE_TIMEOUT_MS = 120_000
FLUSH_TIMEOUT_S = MESSAGE_TIMEOUT_MS / 1000 + 30


def producer_config(connection: Mapping[str, Any]) -> dict[str, Any]:
    """Idempotent, batched producer over ``connection`` (``Settings.kafka_client_config``): no
    duplicates on retry, high throughput on one core."""
    return {
        **connection,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 25,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        # The largest record cinestream writes is a DLQ record (librdkafka's default, 1,000,000
        # bytes, is less than one with the largest key that `ratings` accepts).
        "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
        # Connection errors surface in the delivery report, not as a line per retry.
        "log_level": 0,
    }


def new_producer(settings: Settings) -> Producer:
    """A producer with :func:`producer_config` for the configured cluster."""
    return Producer(producer_config(settings.kafka_client_config))


def _produce_all(
    producer: Producer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    settings: Settings | None = None,
) -> tuple[int, list[str], dict[int, int]]:
    """Produce every (key, value) and wait for all deliveries: (undelivered, first errors, the
    end offset after the delivered records per partition written to). A refusal by the
    authorizer is reported as its one line naming the principal (kafka/acls.py)."""
    failures: list[str] = []
    refused: list[str] = []
    ends: dict[int, int] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            connection = settings.kafka_client_config if settings is not None else {}
            line = acls.refused_line(connection, err, "WRITE", "topic", topic)
            if line:
                refused.append(line)
            failures.append(line or err.str())
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is not None and offset is not None and offset >= 0:
            ends[partition] = max(ends.get(partition, 0), offset + 1)

    try:
        for key, value in records:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            producer.poll(0)
        remaining = producer.flush(FLUSH_TIMEOUT_S)
    except acls.CLIENT_FAILURES as exc:
        connection = settings.kafka_client_config if settings is not None else {}
        line = acls.refused_by(exc, connection, "WRITE", "topic", topic)
        if line is None:
            raise
        raise acls.KafkaRefused(line) from exc
    if remaining:
        # Not reported within the timeout (should not happen): drop what is still queued so it
        # can never arrive after a newer version; the caller retries the whole publication.
        producer.purge(in_queue=True, in_flight=False)
        producer.flush(0)
    if refused:
        # Refused by the authorizer: not a lost delivery to retry, a missing ACL to name.
        raise acls.KafkaRefused(refused[0])
    return remaining + len(failures), failures[:1], ends


def publish_metrics(
    settings: Settings, metrics: Sequence[WindowMetric], producer: Producer | None = None
) -> None:
    """Publish metric records keyed ``<window_type>|<window_start>``; raise if any is lost."""
    if not metrics:
        return
    lost, errors, _ = _produce_all(
        producer or new_producer(settings),
        settings.metrics_topic,
        (
            (
                metric_key(metric.window_type, metric.window_start_ms).encode(),
                json.dumps(metric.record(), separators=(",", ":")).encode(),
            )
            for metric in metrics
        ),
        settings,
    )
    if lost:
        raise ServiceUnavailable(
            f"could not publish {lost} metrics to {settings.metrics_topic} "
            f"({errors or 'timeout'}); the windows are stored and are re-published when "
            "the batch is replayed"
        )


def publish_dlq(
    settings: Settings,
    records: Sequence[tuple[bytes | None, bytes]],
    producer: Producer | None = None,
) -> dict[int, int]:
    """Publish DLQ messages (key, value) from the store's outbox to the dead-letter topic; raise
    if any is lost (they then stay in the outbox for the next publisher). Returns the topic's end
    offset after them per partition written to (``store.dlq_outbox`` records it)."""
    if not records:
        return {}
    lost, errors, ends = _produce_all(
        producer or new_producer(settings), settings.dlq_topic, records, settings
    )
    if lost:
        raise ServiceUnavailable(
            f"could not publish {lost} invalid records to {settings.dlq_topic} "
            f"({errors or 'timeout'}); they stay in the store's outbox and are published again "
            "by the next publication"
        )
    return ends
