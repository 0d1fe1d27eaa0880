"""Suite ``continuity``: inside a span where ratings were produced, every minute has a window.

This is the seed's failure (40,400 ratings in the topic, empty windows) caught as data quality.
"""

from __future__ import annotations

from collections.abc import Iterable

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from cinestream.schemas import format_time

NAME = "continuity"
HAS_WINDOW = "minute_with_ratings_has_a_window"


def prepare(rating_minutes_ms: Iterable[int], window_starts_ms: Iterable[int]) -> pd.DataFrame:
    """One row per minute that has ratings, telling whether its tumbling_1min window exists."""
    have = set(window_starts_ms)
    minutes = sorted(set(rating_minutes_ms))
    return pd.DataFrame(
        {"minute": [format_time(m) for m in minutes], HAS_WINDOW: [m in have for m in minutes]},
        columns=["minute", HAS_WINDOW],
    )


def suite() -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name=NAME,
        expectations=[gxe.ExpectColumnValuesToBeInSet(column=HAS_WINDOW, value_set=[True])],
    )
