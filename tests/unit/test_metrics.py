from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cinestream.metrics import nearest_rank, top_movies, window_metric
from cinestream.schemas import format_time, metric_key, metric_record, parse_time


def hist(*ratings: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in ratings:
        out[int(r * 2)] = out.get(int(r * 2), 0) + 1
    return out


@pytest.mark.parametrize(
    ("ratings", "p", "expected"),
    [
        ([3.0], 0.5, 3.0),
        ([3.0], 0.95, 3.0),
        ([1.0, 2.0], 0.5, 1.0),  # ceil(0.5*2)=1 -> the first
        ([1.0, 2.0, 3.0], 0.5, 2.0),  # ceil(1.5)=2
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([0.5] * 19 + [5.0], 0.95, 0.5),  # ceil(19)=19 ratings <= 0.5
        ([0.5] * 18 + [5.0] * 2, 0.95, 5.0),
        ([4.5, 0.5, 2.5, 2.5, 5.0], 0.95, 5.0),
    ],
)
def test_nearest_rank(ratings: list[float], p: float, expected: float) -> None:
    assert nearest_rank(hist(*ratings), p) == expected


def test_nearest_rank_of_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty window"):
        nearest_rank({}, 0.5)


def test_top_movies_orders_by_count_then_smaller_id() -> None:
    counts = [(7, 3), (3, 3), (9, 5), (1, 1), (2, 3)]
    assert top_movies(counts) == [9, 2, 3, 7, 1]


def test_top_movies_keeps_ten_and_breaks_ties_at_the_cut() -> None:
    counts = [(movie, 2) for movie in range(20, 8, -1)] + [(100, 9)]
    assert top_movies(counts) == [100, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def test_window_metric_matches_the_spec_example_shape() -> None:
    start = int(datetime(2025, 11, 10, 18, 5, tzinfo=UTC).timestamp() * 1000)
    processed = datetime(2025, 11, 10, 18, 6, 15, 123000, tzinfo=UTC)
    m = window_metric(
        "tumbling_1min",
        start,
        start + 60_000,
        hist(3.5, 4.5, 3.0, 5.0),
        [(1, 2), (2, 1), (3, 1)],
        processed,
    )
    record = metric_record(m.as_row())
    assert list(record) == [
        "window_start",
        "window_end",
        "window_type",
        "count",
        "avg_rating",
        "p50_rating",
        "p95_rating",
        "top_movies",
        "processing_time",
    ]
    assert record["window_start"] == "2025-11-10T18:05:00.000Z"
    assert record["window_end"] == "2025-11-10T18:06:00.000Z"
    assert record["processing_time"] == "2025-11-10T18:06:15.123Z"
    assert record["count"] == 4
    assert record["avg_rating"] == 4.0
    assert (record["p50_rating"], record["p95_rating"]) == (3.5, 5.0)
    assert json.loads(record["top_movies"]) == [1, 2, 3]
    assert record["top_movies"] == "[1,2,3]"


def test_times_round_trip_and_keys() -> None:
    assert format_time(1762797900123) == "2025-11-10T18:05:00.123Z"
    assert parse_time("2025-11-10T18:05:00.123Z") == datetime(
        2025, 11, 10, 18, 5, 0, 123000, tzinfo=UTC
    )
    assert parse_time("2025-11-10T18:05:00") == datetime(2025, 11, 10, 18, 5, tzinfo=UTC)
    assert metric_key("tumbling_1min", 1762797900000) == "tumbling_1min|2025-11-10T18:05:00.000Z"
