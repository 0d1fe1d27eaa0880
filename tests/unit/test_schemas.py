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
