"""Producing to Kafka: the one producer configuration, and publishing metric records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Producer

from cinestream.errors import ServiceUnavailable
from cinestream.metrics import WindowMetric
from cinestream.schemas import metric_key
from cinestream.settings import Settings


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
        "message.timeout.ms": 120_000,
        # Connection errors surface in the delivery report, not as a line per retry.
        "log_level": 0,
    }


def new_producer(settings: Settings) -> Producer:
    """A producer with :func:`producer_config` for the configured cluster."""
    return Producer(producer_config(settings.kafka_client_config))


def publish_metrics(
    settings: Settings, metrics: Sequence[WindowMetric], producer: Producer | None = None
) -> None:
    """Publish metric records keyed ``<window_type>|<window_start>``; raise if any is lost."""
    if not metrics:
        return
    producer = producer or new_producer(settings)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    for metric in metrics:
        producer.produce(
            settings.metrics_topic,
            json.dumps(metric.record(), separators=(",", ":")).encode(),
            metric_key(metric.window_type, metric.window_start_ms).encode(),
            on_delivery=on_delivery,
        )
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise ServiceUnavailable(
            f"could not publish {remaining + len(failures)} metrics to {settings.metrics_topic} "
            f"({failures[:1] or 'timeout'}); the windows are stored and are re-published when "
            "the batch is replayed"
        )
