"""The SPEC's validity rule in plain Python (for the quality checks) agrees with the Spark parser
on every case the parser's tests hold."""

from __future__ import annotations

import json

import pytest

from cinestream.schemas import valid_event_time
from tests.unit.stream.test_transforms import INVALID, T0, rating


@pytest.mark.parametrize(("value", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_every_invalid_kind_of_the_parser_is_invalid_here_too(
    value: bytes | None, reason: str
) -> None:
    assert valid_event_time(value) is None, reason


@pytest.mark.parametrize(
    "value",
    [rating(), rating(value=1, extra="x"), rating(value=0.5) + b"\n", rating(note="tab\there")],
)
def test_valid_ratings_give_their_event_time(value: bytes) -> None:
    assert valid_event_time(value) == T0


def test_booleans_are_not_numbers() -> None:
    body = {"user_id": True, "movie_id": 2, "rating": 4.5, "timestamp": T0}
    assert valid_event_time(json.dumps(body).encode()) is None


def test_any_record_ratings_accepts_fits_the_dlq_as_a_dlq_record() -> None:
    from cinestream.kafka.admin import topic_specs
    from cinestream.kafka.produce import producer_config
    from cinestream.schemas import (
        DLQ_MAX_MESSAGE_BYTES,
        DLQ_RAW_PREFIX_BYTES,
        DLQ_VALUE_MAX_BYTES,
        RATINGS_MAX_MESSAGE_BYTES,
    )
    from cinestream.settings import Settings

    settings = Settings()
    limits = {
        s.name: int(s.config["max.message.bytes"])
        for s in topic_specs(settings)
        if "max.message.bytes" in s.config
    }
    assert limits[settings.ratings_topic] == RATINGS_MAX_MESSAGE_BYTES == 2**20 + 12
    # The largest key `ratings` takes, a DLQ value at its longest, and framing.
    assert limits[settings.dlq_topic] >= RATINGS_MAX_MESSAGE_BYTES + DLQ_VALUE_MAX_BYTES + 1024
    assert DLQ_VALUE_MAX_BYTES >= 6 * DLQ_RAW_PREFIX_BYTES + 1024
    # The producers that write the DLQ (the driver's librdkafka one; Spark's sink sets its own
    # kafka.max.request.size in kafka_io.write_dlq) take a record that long.
    assert producer_config({})["message.max.bytes"] >= limits[settings.dlq_topic]
    assert limits[settings.dlq_topic] == DLQ_MAX_MESSAGE_BYTES
