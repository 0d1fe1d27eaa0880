"""The producer's timeouts: a publication never returns while a record is still queued."""

from __future__ import annotations

from cinestream.kafka.produce import FLUSH_TIMEOUT_S, producer_config


def test_a_publication_waits_longer_than_librdkafka_takes_to_report_every_record() -> None:
    # A record still queued when publish gave up could land after a newer version of its window.
    config = producer_config({"bootstrap.servers": "127.0.0.1:1"})
    assert FLUSH_TIMEOUT_S * 1000 > config["message.timeout.ms"]
    assert config["enable.idempotence"] is True and config["acks"] == "all"
