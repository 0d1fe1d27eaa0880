"""Suite ``window_metrics``: rows of the PostgreSQL table, by window range."""

from __future__ import annotations

import json
from collections.abc import Mapping

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from cinestream.schemas import METRIC_FIELDS, RATING_VALUES, TOP_MOVIES_LIMIT

NAME = "window_metrics"
# Columns prepare() derives, so that every rule is an expectation with a readable name.
LENGTH_OK = "window_end_minus_start_equals_window_length"
TOP_OK = "top_movies_is_json_list_of_at_most_10_distinct_positive_ints"
# A rating may be stamped up to the future tolerance ahead of the wall clock (SPEC), so its window
# can be processed that much before it starts, not earlier.
EARLIEST_PROCESSING = "window_start_minus_future_tolerance"
DERIVED = (LENGTH_OK, TOP_OK, EARLIEST_PROCESSING)


def _top_movies_ok(value: object) -> bool:
    try:
        movies = json.loads(str(value))
    except ValueError:
        return False
    return (
        isinstance(movies, list)
        and len(movies) <= TOP_MOVIES_LIMIT
        and len(set(movies)) == len(movies)
        and all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in movies)
    )


def prepare(
    rows: pd.DataFrame, window_lengths_ms: Mapping[str, int], future_tolerance_ms: int = 0
) -> pd.DataFrame:
    """The table's rows plus the derived check columns."""
    df = rows.copy()
    if "window_start" in df:
        df[EARLIEST_PROCESSING] = pd.to_datetime(df["window_start"], utc=True) - pd.Timedelta(
            milliseconds=future_tolerance_ms
        )
    else:
        df[EARLIEST_PROCESSING] = pd.NaT
    if {"window_start", "window_end", "window_type"} <= set(df.columns):
        span = pd.to_datetime(df["window_end"], utc=True) - pd.to_datetime(
            df["window_start"], utc=True
        )
        length = span.dt.total_seconds() * 1000
        expected = df["window_type"].map(window_lengths_ms)
        df[LENGTH_OK] = (length == expected).astype(bool)
    else:
        df[LENGTH_OK] = False
    df[TOP_OK] = df["top_movies"].map(_top_movies_ok) if "top_movies" in df else False
    return df


def suite() -> gx.ExpectationSuite:
    half_stars = list(RATING_VALUES)
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectTableColumnsToMatchSet(
                column_set=[*METRIC_FIELDS, *DERIVED], exact_match=True
            ),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["window_type", "window_start"]),
            gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="avg_rating", min_value=0.5, max_value=5.0),
            gxe.ExpectColumnValuesToBeInSet(column="p50_rating", value_set=half_stars),
            gxe.ExpectColumnValuesToBeInSet(column="p95_rating", value_set=half_stars),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="p95_rating", column_B="p50_rating", or_equal=True
            ),
            gxe.ExpectColumnValuesToBeInSet(column=LENGTH_OK, value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column=TOP_OK, value_set=[True]),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="processing_time", column_B=EARLIEST_PROCESSING, or_equal=True
            ),
        ],
    )
