from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cinestream.metrics import nearest_rank, rating_stats, top_movies, window_metric
from cinestream.schemas import METRIC_FIELDS, format_time, metric_key, parse_time
from tests.reference import SPEC_EXAMPLE_RECORD


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
    processed = int(datetime(2025, 11, 10, 18, 6, 15, 123000, tzinfo=UTC).timestamp() * 1000)
    m = window_metric(
        "tumbling_1min",
        start,
        start + 60_000,
        hist(3.5, 4.5, 3.0, 5.0),
        [(1, 2), (2, 1), (3, 1)],
        processed,
    )
    record = m.record()
    assert list(record) == list(SPEC_EXAMPLE_RECORD) == list(METRIC_FIELDS)
    assert m.key == ("tumbling_1min", start)
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


def test_rating_stats_over_several_windows_are_the_window_rules() -> None:
    # The API's "last hour" uses the same function as each window's metric.
    histogram = hist(0.5, 0.5, 3.0, 4.0, 4.5, 5.0, 5.0)
    stats = rating_stats(histogram)
    assert (stats.count, stats.p50_rating, stats.p95_rating) == (7, 4.0, 5.0)
    assert stats.avg_rating == pytest.approx(22.5 / 7)
    one_window = window_metric("tumbling_1min", 0, 60_000, histogram, [(1, 7)], 0)
    assert (one_window.avg_rating, one_window.p50_rating, one_window.p95_rating) == (
        stats.avg_rating,
        stats.p50_rating,
        stats.p95_rating,
    )
