from __future__ import annotations

import pytest

from cinestream.timeparse import parse_duration_ms, parse_interval_s, spark_interval
from cinestream.windows import WindowTypeError, parse_window_type

# Which windows contain an event (bounds inclusive at the start, exclusive at the end) is the
# Spark transform's job and is tested there: tests/unit/stream/test_transforms.py.


def test_tumbling_window_sizes() -> None:
    spec = parse_window_type("tumbling_1min")
    assert (spec.size_ms, spec.slide_ms, spec.windows_per_event) == (60_000, 60_000, 1)


def test_sliding_windows_per_event() -> None:
    spec = parse_window_type("sliding_5min_1min")
    assert (spec.size_ms, spec.slide_ms, spec.windows_per_event) == (300_000, 60_000, 5)


@pytest.mark.parametrize(
    "name", ["tumbling", "tumbling_0min", "sliding_5min_2min", "hopping_1min", "tumbling_1week"]
)
def test_bad_window_types_say_what_to_use(name: str) -> None:
    with pytest.raises(WindowTypeError):
        parse_window_type(name)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("10s", 10_000),
        ("10 seconds", 10_000),
        ("1.5s", 1_500),
        ("250ms", 250),
        ("5min", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("30", 30_000),
    ],
)
def test_one_duration_grammar(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert parse_interval_s(text) == ms / 1000
    # Spark gets exactly those milliseconds: no "10.0s" -> "10 seconds" round trip.
    assert spark_interval(text) == f"{ms} milliseconds"


@pytest.mark.parametrize("text", ["", "0s", "-1s", "10 parsecs", "0.0001s", "s"])
def test_bad_durations_say_what_to_use(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_ms(text)
