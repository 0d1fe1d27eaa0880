"""An independent recomputation of window metrics from raw events, for the tests.

Deliberately written differently from cinestream.metrics (sorting instead of histograms) so that a
shared mistake is unlikely.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

WINDOW_MS = 60_000

# The SPEC's example metric record, verbatim: its keys (in order) are the record's fields.
SPEC_EXAMPLE_RECORD = {
    "window_start": "2025-11-10T18:05:00.000Z",
    "window_end": "2025-11-10T18:06:00.000Z",
    "window_type": "tumbling_1min",
    "count": 1024,
    "avg_rating": 3.512345,
    "p50_rating": 3.5,
    "p95_rating": 4.5,
    "top_movies": "[1,2,3,4,5,6,7,8,9,10]",
    "processing_time": "2025-11-10T18:06:15.123Z",
}


def iso(ms: int) -> str:
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def recompute(
    events: list[tuple[int, int, float, int]], window_ms: int = WINDOW_MS
) -> dict[str, dict[str, Any]]:
    """events: (user_id, movie_id, rating, timestamp_ms) -> {window_start iso: metric fields}."""
    by_window: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for _user, movie, rating, ts in events:
        by_window[ts // window_ms * window_ms].append((movie, rating))
    out: dict[str, dict[str, Any]] = {}
    for start, rows in by_window.items():
        ratings = sorted(r for _, r in rows)
        n = len(ratings)
        counts = Counter(m for m, _ in rows)
        top = [m for m, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
        out[iso(start)] = {
            "window_start": iso(start),
            "window_end": iso(start + window_ms),
            "count": n,
            "avg_rating": sum(ratings) / n,
            "p50_rating": ratings[math.ceil(0.50 * n) - 1],
            "p95_rating": ratings[math.ceil(0.95 * n) - 1],
            "top_movies": json.dumps(top, separators=(",", ":")),
        }
    return out


def events_from_messages(messages: list[Any]) -> list[tuple[int, int, float, int]]:
    events = []
    for msg in messages:
        body = json.loads(msg.value())
        events.append((body["user_id"], body["movie_id"], body["rating"], body["timestamp"]))
    return events


def invalid_burst() -> list[tuple[bytes | None, bytes | None]]:
    """100 invalid ratings (key, value) of three kinds from two producers, for the DLQ tests:
    60 with rating 7 and 25 not JSON from ``producer-a``, 15 with user_id 0 from ``producer-b``."""
    ok = {"user_id": 1, "movie_id": 2, "timestamp": 1_764_547_200_000}
    return (
        [(b"producer-a", json.dumps({**ok, "rating": 7}).encode())] * 60
        + [(b"producer-a", b"not json")] * 25
        + [(b"producer-b", json.dumps({**ok, "user_id": 0, "rating": 3}).encode())] * 15
    )
