"""The metric definitions (SPEC), as pure functions over a window's exact aggregates.

Both drivers (the stream and the backfill) keep, per window, the number of ratings of each half
star and the number of ratings of each movie; everything published is derived here from those,
and so is every statistic the API shows over several windows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cinestream.schemas import HALF_STARS, TOP_MOVIES_LIMIT, metric_record


@dataclass(frozen=True)
class WindowMetric:
    """One window's metric; times are epoch milliseconds (ISO only in :meth:`record`)."""

    window_type: str
    window_start_ms: int
    window_end_ms: int
    count: int
    avg_rating: float
    p50_rating: float
    p95_rating: float
    top_movies: str
    processing_time_ms: int

    @property
    def key(self) -> tuple[str, int]:
        """(window_type, window_start_ms): the window's identity in the store."""
        return self.window_type, self.window_start_ms

    def record(self) -> dict[str, Any]:
        """The SPEC's JSON record (``metrics`` topic, API): exactly its fields, ISO times."""
        return metric_record(
            {
                "window_start": self.window_start_ms,
                "window_end": self.window_end_ms,
                "window_type": self.window_type,
                "count": self.count,
                "avg_rating": self.avg_rating,
                "p50_rating": self.p50_rating,
                "p95_rating": self.p95_rating,
                "top_movies": self.top_movies,
                "processing_time": self.processing_time_ms,
            }
        )


@dataclass(frozen=True)
class RatingStats:
    """Count, mean and nearest-rank percentiles of a set of ratings."""

    count: int
    avg_rating: float
    p50_rating: float
    p95_rating: float


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


def rating_stats(histogram: Mapping[int, int]) -> RatingStats:
    """Count, mean, p50 and p95 of the ratings in a half-star histogram (not empty)."""
    count = sum(histogram.values())
    half_star_sum = sum(h * n for h, n in histogram.items())
    return RatingStats(
        count=count,
        avg_rating=half_star_sum / (2 * count) if count else math.nan,
        p50_rating=nearest_rank(histogram, 0.50),
        p95_rating=nearest_rank(histogram, 0.95),
    )


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
    processing_time_ms: int | None = None,
) -> WindowMetric:
    """The metric record of one window from its half-star histogram and per-movie counts."""
    stats = rating_stats(histogram)
    return WindowMetric(
        window_type=window_type,
        window_start_ms=window_start_ms,
        window_end_ms=window_end_ms,
        count=stats.count,
        avg_rating=stats.avg_rating,
        p50_rating=stats.p50_rating,
        p95_rating=stats.p95_rating,
        top_movies=json.dumps(top_movies(movie_counts), separators=(",", ":")),
        processing_time_ms=(
            processing_time_ms if processing_time_ms is not None else int(time.time() * 1000)
        ),
    )
