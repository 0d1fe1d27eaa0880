"""The metric definitions (SPEC), as pure functions over a window's exact aggregates.

Both drivers (the stream and the backfill) keep, per window, the number of ratings of each half
star and the number of ratings of each movie; everything published is derived here from those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cinestream.schemas import HALF_STARS, TOP_MOVIES_LIMIT


@dataclass(frozen=True)
class WindowMetric:
    window_type: str
    window_start: datetime
    window_end: datetime
    count: int
    avg_rating: float
    p50_rating: float
    p95_rating: float
    top_movies: str
    processing_time: datetime

    def as_row(self) -> dict[str, object]:
        return dict(self.__dict__)


def nearest_rank(histogram: Mapping[int, int], p: float) -> float:
    """Smallest rating r with at least ceil(p * count) ratings <= r (histogram in half stars)."""
    total = sum(histogram.values())
    if total <= 0:
        raise ValueError("a percentile of an empty window is undefined")
    rank = max(1, math.ceil(p * total))
    seen = 0
    for half_stars in HALF_STARS:
        seen += histogram.get(half_stars, 0)
        if seen >= rank:
            return half_stars / 2
    raise ValueError(f"histogram keys must be half stars 1..10, got {sorted(histogram)}")


def top_movies(movie_counts: Iterable[tuple[int, int]], limit: int = TOP_MOVIES_LIMIT) -> list[int]:
    """Movie ids with the most ratings, most first, ties broken by the smaller id."""
    ranked = sorted(((-count, movie) for movie, count in movie_counts if count > 0))
    return [movie for _, movie in ranked[:limit]]


def window_metric(
    window_type: str,
    window_start_ms: int,
    window_end_ms: int,
    histogram: Mapping[int, int],
    movie_counts: Iterable[tuple[int, int]],
    processing_time: datetime | None = None,
) -> WindowMetric:
    """The metric record of one window from its half-star histogram and per-movie counts."""
    count = sum(histogram.values())
    half_star_sum = sum(h * n for h, n in histogram.items())
    return WindowMetric(
        window_type=window_type,
        window_start=datetime.fromtimestamp(window_start_ms / 1000, tz=UTC),
        window_end=datetime.fromtimestamp(window_end_ms / 1000, tz=UTC),
        count=count,
        avg_rating=half_star_sum / (2 * count),
        p50_rating=nearest_rank(histogram, 0.50),
        p95_rating=nearest_rank(histogram, 0.95),
        top_movies=json.dumps(top_movies(movie_counts), separators=(",", ":")),
        processing_time=processing_time or datetime.now(tz=UTC),
    )
