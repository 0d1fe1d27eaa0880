"""Suite ``ratings``: a sample of raw events, and the share of records sent to the DLQ."""

from __future__ import annotations

import json
from collections.abc import Iterable

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from cinestream.schemas import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, RATING_VALUES

NAME = "ratings"
DLQ_SHARE = "dlq_share"


def prepare(values: Iterable[bytes | None], dlq_records: int, ratings_records: int) -> pd.DataFrame:
    """Parsed sample rows (NaN where a field is missing) and the DLQ share on every row."""
    rows = []
    for value in values:
        try:
            record = json.loads(value or b"")
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        rows.append({f: record.get(f) for f in ("user_id", "movie_id", "rating", "timestamp")})
    df = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    for column in df.columns:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df[DLQ_SHARE] = dlq_records / ratings_records if ratings_records else 0.0
    return df


def suite(max_dlq_share: float) -> gx.ExpectationSuite:
    # Invalid records are in the sample too; they may be at most the allowed DLQ share.
    mostly = max(0.0, 1.0 - max_dlq_share)
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[
            gxe.ExpectColumnValuesToBeBetween(column="user_id", min_value=1, mostly=mostly),
            gxe.ExpectColumnValuesToBeBetween(column="movie_id", min_value=1, mostly=mostly),
            gxe.ExpectColumnValuesToBeInSet(
                column="rating", value_set=list(RATING_VALUES), mostly=mostly
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp",
                min_value=MIN_TIMESTAMP_MS,
                max_value=MAX_TIMESTAMP_MS - 1,
                mostly=mostly,
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column=DLQ_SHARE, min_value=0, max_value=max_dlq_share
            ),
        ],
    )
