"""The expectation suites: good data passes; each crafted bad row fails exactly its expectation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from expectations import continuity, metrics_topic, ratings, window_metrics

from cinestream.quality import run_suites
from cinestream.settings import Settings

T = datetime(2025, 11, 10, 18, 5, tzinfo=UTC)
LENGTHS = {"tumbling_1min": 60_000}


def good_rows() -> pd.DataFrame:
    rows = []
    for i in range(3):
        start = T + timedelta(minutes=i)
        rows.append(
            {
                "window_start": start,
                "window_end": start + timedelta(minutes=1),
                "window_type": "tumbling_1min",
                "count": 100 + i,
                "avg_rating": 3.5,
                "p50_rating": 3.5,
                "p95_rating": 5.0,
                "top_movies": "[3,1,2]",
                "processing_time": start + timedelta(minutes=1, seconds=5),
            }
        )
    return pd.DataFrame(rows)


def failures(name: str, suite: Any, frame: pd.DataFrame) -> list[tuple[str, str | None]]:
    report = run_suites(Settings(), {name: (suite, frame)}, build_docs=False)
    return [(f.expectation, f.column) for f in report.failures]


def test_good_data_passes_every_suite() -> None:
    record = (
        '{"window_start":"2025-11-10T18:05:00.000Z","window_end":"2025-11-10T18:06:00.000Z",'
        '"window_type":"tumbling_1min","count":3,"avg_rating":3.5,"p50_rating":3.5,'
        '"p95_rating":4.5,"top_movies":"[1,2]","processing_time":"2025-11-10T18:06:01.000Z"}'
    )
    frames = {
        window_metrics.NAME: (window_metrics.suite(), window_metrics.prepare(good_rows(), LENGTHS)),
        metrics_topic.NAME: (
            metrics_topic.suite(),
            metrics_topic.prepare([(b"tumbling_1min|2025-11-10T18:05:00.000Z", record.encode())]),
        ),
        continuity.NAME: (continuity.suite(), continuity.prepare([1, 2], [1, 2, 3])),
        ratings.NAME: (
            ratings.suite(0.01),
            ratings.prepare(
                [b'{"user_id":1,"movie_id":2,"rating":4.5,"timestamp":1762797900000}'] * 50, 0, 50
            ),
        ),
    }
    report = run_suites(Settings(), frames, build_docs=False)
    assert report.success, report.lines()
    assert set(report.suites) == {"window_metrics", "metrics_topic", "continuity", "ratings"}


def _bad(column: str, value: Any) -> pd.DataFrame:
    rows = good_rows()
    if not isinstance(value, datetime):
        rows[column] = rows[column].astype(object)
    rows.at[1, column] = value
    return rows


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (lambda: good_rows().assign(extra=1), ("expect_table_columns_to_match_set", None)),
        (
            lambda: pd.concat([good_rows(), good_rows().iloc[[0]]], ignore_index=True),
            ("expect_compound_columns_to_be_unique", None),
        ),
        (lambda: _bad("count", 0), ("expect_column_values_to_be_between", "count")),
        (lambda: _bad("avg_rating", 5.5), ("expect_column_values_to_be_between", "avg_rating")),
        (lambda: _bad("p50_rating", 3.3), ("expect_column_values_to_be_in_set", "p50_rating")),
        (lambda: _bad("p95_rating", 4.7), ("expect_column_values_to_be_in_set", "p95_rating")),
        (
            lambda: good_rows().assign(p50_rating=[3.5, 5.0, 3.5], p95_rating=[5.0, 4.5, 5.0]),
            ("expect_column_pair_values_a_to_be_greater_than_b", "p95_rating vs p50_rating"),
        ),
        (
            lambda: _bad("window_end", T + timedelta(minutes=3)),
            ("expect_column_values_to_be_in_set", window_metrics.LENGTH_OK),
        ),
        (
            lambda: _bad("top_movies", "[1,1,2]"),
            ("expect_column_values_to_be_in_set", window_metrics.TOP_OK),
        ),
        (
            lambda: _bad("top_movies", "[1,2,3,4,5,6,7,8,9,10,11]"),
            ("expect_column_values_to_be_in_set", window_metrics.TOP_OK),
        ),
        (
            lambda: _bad("top_movies", "[0, 2]"),
            ("expect_column_values_to_be_in_set", window_metrics.TOP_OK),
        ),
        (
            lambda: _bad("processing_time", T - timedelta(hours=1)),
            (
                "expect_column_pair_values_a_to_be_greater_than_b",
                f"processing_time vs {window_metrics.EARLIEST_PROCESSING}",
            ),
        ),
    ],
    ids=[
        "extra-column",
        "duplicate-window",
        "empty-window",
        "avg-out-of-range",
        "p50-not-half-star",
        "p95-not-half-star",
        "p50-above-p95",
        "wrong-length",
        "duplicate-movie",
        "eleven-movies",
        "non-positive-movie",
        "processed-before-start",
    ],
)
def test_each_window_metrics_expectation(frame: Any, expected: tuple[str, str | None]) -> None:
    got = failures(
        "window_metrics", window_metrics.suite(), window_metrics.prepare(frame(), LENGTHS)
    )
    assert got == [expected]


def test_metrics_topic_expectations() -> None:
    good = (
        '{"window_start":"2025-11-10T18:05:00.000Z","window_end":"2025-11-10T18:06:00.000Z",'
        '"window_type":"tumbling_1min","count":3,"avg_rating":3.5,"p50_rating":3.5,'
        '"p95_rating":4.5,"top_movies":"[1,2]","processing_time":"2025-11-10T18:06:01.000Z"}'
    )
    key = b"tumbling_1min|2025-11-10T18:05:00.000Z"
    extra = good[:-1] + ',"extra":1}'
    wrong_type = good.replace('"count":3', '"count":"3"')
    cases = {
        metrics_topic.FIELDS_OK: [(key, extra.encode())],
        metrics_topic.TYPES_OK: [(key, wrong_type.encode())],
        metrics_topic.KEY_OK: [(b"tumbling_1min|2025-11-10T18:04:00.000Z", good.encode())],
    }
    for column, messages in cases.items():
        got = failures(
            "metrics_topic",
            metrics_topic.suite(),
            metrics_topic.prepare([(key, good.encode()), *messages]),
        )
        assert got == [("expect_column_values_to_be_in_set", column)]


def test_continuity_catches_the_seeds_empty_windows() -> None:
    got = failures("continuity", continuity.suite(), continuity.prepare([0, 60_000], []))
    assert got == [("expect_column_values_to_be_in_set", continuity.HAS_WINDOW)]
    report = run_suites(
        Settings(),
        {
            "continuity": (
                continuity.suite(),
                continuity.prepare([0, 60_000, 120_000], [0, 120_000]),
            )
        },
        build_docs=False,
    )
    assert "1 unexpected of 3" in report.failures[0].line()


def test_ratings_sample_and_dlq_share() -> None:
    valid = b'{"user_id":1,"movie_id":2,"rating":4.5,"timestamp":1762797900000}'
    bad_rating = b'{"user_id":1,"movie_id":2,"rating":4.3,"timestamp":1762797900000}'
    got = failures(
        "ratings", ratings.suite(0.01), ratings.prepare([valid] * 90 + [bad_rating] * 10, 0, 100)
    )
    assert got == [("expect_column_values_to_be_in_set", "rating")]
    got = failures("ratings", ratings.suite(0.01), ratings.prepare([valid] * 100, 5, 100))
    assert got == [("expect_column_values_to_be_between", ratings.DLQ_SHARE)]


def test_observed_values_read_as_a_person_writes_them() -> None:
    import numpy as np

    from cinestream.quality import readable

    assert readable(np.str_("2026-11-28T08:25:15.755514000")) == "2026-11-28T08:25:15.755514"
    assert readable([np.float64(3.0), np.int64(5), 2.5, None]) == "[3, 5, 2.5, None]"
    assert readable({"min": np.float64(0.5)}) == "{min: 0.5}"
    assert "np." not in readable([np.str_("a"), np.bool_(True)])
