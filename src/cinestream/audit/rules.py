"""The SPEC's rules written again for the audit, in pure Python (neither Spark nor the
processor's code): what a valid rating is, which windows it belongs to, and a window's metrics
from its ratings."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cinestream.schemas import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from cinestream.windows import WindowSpec

MAX_ID = 2**63 - 1
TOP = 10


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_rating(value: bytes | None) -> tuple[int, int, int, int] | None:
    """(user_id, movie_id, half_stars 1..10, timestamp_ms) of a valid rating, else None.

    The SPEC's rules read directly: a UTF-8 JSON object (strict JSON: no NaN, no trailing
    data); integer ids >= 1; a rating of 0.5..5.0 in half stars; an integer timestamp in
    [2000-01-01, 2100-01-01). Extra fields are ignored."""
    if value is None:
        return None
    try:
        body = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    user, movie, rating, ts = (body.get(k) for k in ("user_id", "movie_id", "rating", "timestamp"))
    if type(user) is not int or type(movie) is not int:
        return None
    if not (1 <= user <= MAX_ID and 1 <= movie <= MAX_ID):
        return None
    if not isinstance(rating, (int, float)) or isinstance(rating, bool):
        return None
    if not math.isfinite(rating):
        return None
    half = rating * 2
    if half != int(half) or not 1 <= half <= 10:
        return None
    if type(ts) is not int or not MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
        return None
    return user, movie, int(half), ts


def window_starts(spec: WindowSpec, ts: int) -> list[int]:
    """Starts of every window of ``spec`` that contains ``ts`` (windows aligned to the epoch)."""
    last = ts - ts % spec.slide_ms
    return [s for s in range(last, ts - spec.size_ms, -spec.slide_ms) if s <= ts < s + spec.size_ms]


@dataclass
class Recomputed:
    """One window, recomputed: ratings per half star and per movie, and where they came from."""

    half_stars: Counter[int] = field(default_factory=Counter)
    movies: Counter[int] = field(default_factory=Counter)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int, movie: int, half: int) -> None:
        self.half_stars[half] += 1
        self.movies[movie] += 1
        low, high = self.offsets.get(partition, (offset, offset))
        self.offsets[partition] = (min(low, offset), max(high, offset))

    def metric(self) -> dict[str, Any]:
        """count, avg_rating, p50_rating, p95_rating, top_movies, as the SPEC defines them."""
        count = sum(self.half_stars.values())
        total = sum(h * n for h, n in self.half_stars.items())

        def percentile(p: float) -> float:
            rank, below = math.ceil(p * count), 0
            for half in sorted(self.half_stars):
                below += self.half_stars[half]
                if below >= rank:
                    return half / 2
            raise AssertionError("unreachable: the ranks add up to count")

        top = sorted(self.movies.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        return {
            "count": count,
            "avg_rating": total / 2 / count,
            "p50_rating": percentile(0.50),
            "p95_rating": percentile(0.95),
            "top_movies": json.dumps([m for m, _ in top], separators=(",", ":")),
        }

    def where(self) -> str:
        """``p0 12..340, p2 5..77``: the partitions and offsets of the window's ratings."""
        return ", ".join(f"p{p} {lo}..{hi}" for p, (lo, hi) in sorted(self.offsets.items()))
