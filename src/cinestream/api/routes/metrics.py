"""``/metrics/summary``, ``/metrics/windows`` and ``/metrics/top-movies``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from cinestream.api.deps import KafkaDep, ReaderDep, SettingsDep
from cinestream.api.models import Summary, TopMovies, WindowRecord
from cinestream.metrics import rating_stats
from cinestream.schemas import format_time
from cinestream.store import reads
from cinestream.store.reads import ProcessorTotals
from cinestream.timeparse import parse_range_bound
from cinestream.windows import WindowTypeError, parse_window_type

router = APIRouter(prefix="/metrics", tags=["metrics"])

EMPTY_HINT = (
    "no windows yet: produce ratings (`cinestream generate --count 40400`) and run the processor "
    "(`cinestream process --trigger available-now`), or start everything with `make up`"
)


# What one request may make the store do (issue 20): every answer below is computed from at most
# this many rows, so a request costs tens of milliseconds whatever its parameters, and the
# statement_timeout of the API's role cuts what the bound did not foresee.
# /metrics/windows returns at most this many records (a day of one-minute windows, ~380 KB of
# JSON, ~30 ms to build): the query walks the primary key from `start` and stops after `limit`
# rows, so the span between start and end costs nothing by itself.
MAX_WINDOWS_LIMIT = 1_440
# /metrics/top-movies sums the per-movie counts of one window per minute: a day is ~200,000 rows
# (~120 ms of PostgreSQL) at 400 ratings a minute; three days (the retention) took three times
# that per request, and each distinct `minutes` misses the cache.
MAX_TOP_MOVIES_MINUTES = 1_440


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_range_bound(value)
    except ValueError as exc:  # not a time, or outside the SPEC's event-time range
        raise HTTPException(422, f"invalid parameters: {name}: {exc}") from exc


# Longer than any window type name a person configures; a longer one is not echoed back whole.
MAX_WINDOW_TYPE_CHARS = 64


def _window_type(settings: Any, value: str | None) -> str:
    name = value or settings.window_types[0]
    if len(name) > MAX_WINDOW_TYPE_CHARS:
        raise HTTPException(
            422,
            f"invalid parameters: window_type: longer than {MAX_WINDOW_TYPE_CHARS} characters; "
            f"configured: {', '.join(settings.window_types)}",
        )
    try:
        parse_window_type(name)
    except WindowTypeError as exc:
        raise HTTPException(422, f"invalid parameters: window_type: {exc}") from exc
    if name not in settings.window_types:
        raise HTTPException(
            422,
            f"invalid parameters: window_type: {name!r} is not computed; "
            f"configured: {', '.join(settings.window_types)}",
        )
    return name


def json_response(body: Any) -> Response:
    """JSON the way FastAPI writes it, without its per-request encoder and validation pass."""
    content = body if isinstance(body, bytes) else _dumps(body)
    return Response(content=content, media_type="application/json")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@router.get(
    "/windows",
    summary="Window metrics in the SPEC's record format",
    response_model=list[WindowRecord],
)
def windows(
    reader: ReaderDep,
    settings: SettingsDep,
    window_type: Annotated[str | None, Query(description="e.g. tumbling_1min")] = None,
    start: Annotated[
        str | None, Query(description="ISO-8601; windows starting at or after")
    ] = None,
    end: Annotated[str | None, Query(description="ISO-8601; windows starting before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_WINDOWS_LIMIT)] = 100,
) -> Response:
    """Window metrics in the SPEC's record format, ordered by ``window_start``."""
    wt = _window_type(settings, window_type)
    start_t, end_t = _instant(start, "start"), _instant(end, "end")
    if start_t and end_t and end_t <= start_t:
        raise HTTPException(422, "invalid parameters: end must be after start")

    start_ms = None if start_t is None else int(start_t.timestamp() * 1000)
    end_ms = None if end_t is None else int(end_t.timestamp() * 1000)
    anchor = _anchor_ms(wt) if start_ms is None and end_ms is None else None

    def query(conn: Any) -> bytes:
        if anchor is not None:
            found = reads.newest_windows(conn, wt, limit, anchor)
        else:
            found = reads.windows_between(conn, wt, start_ms, end_ms, limit)
        return _dumps([m.record() for m in found])

    return json_response(reader.read(("windows", wt, start_t, end_t, limit, anchor), query))


def _anchor_ms(window_type: str) -> int:
    """The start of the wall clock's current window slot: "started by now" for this type's
    windows, constant within a slot (so it can be part of a cache key)."""
    slide = parse_window_type(window_type).slide_ms
    now_ms = int(time.time() * 1000)
    return now_ms - now_ms % slide


def _top_movies_since(
    conn: Any, window_type: str, since_ms: int, until_ms: int, limit: int
) -> list[dict[str, int]]:
    return [
        {"movie_id": m, "ratings": n}
        for m, n in reads.top_movie_counts(conn, window_type, since_ms, until_ms, limit)
    ]


def _newest_end_ms(conn: Any, window_type: str, anchor_ms: int) -> int | None:
    """End of the newest window started by the anchor that has ratings."""
    start = reads.newest_window_start_ms(conn, window_type, anchor_ms)
    return None if start is None else start + parse_window_type(window_type).size_ms


@router.get(
    "/top-movies",
    summary="Most-rated movies over the last minutes of event time",
    response_model=TopMovies,
)
def top_movies_route(
    reader: ReaderDep,
    settings: SettingsDep,
    minutes: Annotated[
        int,
        Query(
            ge=1, le=MAX_TOP_MOVIES_MINUTES, description="minutes before the newest window's end"
        ),
    ] = 60,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    """The most-rated movies over the last ``minutes`` of event time."""
    wt = settings.window_types[0]
    if minutes * 60_000 > settings.retention_ms:
        raise HTTPException(
            422,
            f"invalid parameters: minutes: {minutes} is longer than the per-movie detail is "
            f"kept (CINESTREAM_RETENTION={settings.retention})",
        )
    anchor = _anchor_ms(wt)

    def query(conn: Any) -> bytes:
        until = _newest_end_ms(conn, wt, anchor)
        if until is None:
            return _dumps({"minutes": minutes, "movies": [], "hint": EMPTY_HINT})
        since = until - minutes * 60_000
        return _dumps(
            {
                "minutes": minutes,
                "from": format_time(since),
                "to": format_time(until),
                "movies": _top_movies_since(conn, wt, since, until, limit),
            }
        )

    return json_response(reader.read(("top-movies", wt, minutes, limit, anchor), query))


@dataclass(frozen=True)
class _StoredSummary:
    """The part of a summary that only changes when the store does."""

    body: dict[str, Any]
    processor: ProcessorTotals | None
    newest_end_ms: int | None


@router.get(
    "/summary",
    summary="Latest window, last hour's totals and the pipeline's state",
    response_model=Summary,
)
def summary(reader: ReaderDep, settings: SettingsDep, kafka: KafkaDep) -> Response:
    """The latest window, last hour's totals and the pipeline's state."""
    wt = settings.window_types[0]
    anchor = _anchor_ms(wt)
    stored = reader.read(("summary", wt, anchor), lambda conn: _stored_summary(conn, wt, anchor))
    pipeline = _pipeline_state(stored.processor, stored.newest_end_ms, kafka.snapshot())
    return json_response({**stored.body, "pipeline": pipeline})


def _stored_summary(conn: Any, wt: str, anchor_ms: int) -> _StoredSummary:
    totals = reads.window_totals(conn, wt)
    latest = reads.latest_window(conn, wt, anchor_ms)
    proc = reads.processor_totals(conn)
    ahead = reads.future_windows(conn, wt, anchor_ms)
    future: dict[str, Any] = {"windows": ahead.windows, "ratings": ahead.ratings}
    if ahead.first_start_ms is not None and ahead.last_start_ms is not None:
        future |= {
            "from": format_time(ahead.first_start_ms),
            "to": format_time(ahead.last_start_ms + parse_window_type(wt).size_ms),
        }
    if latest is None:
        body = {
            "window_type": wt,
            "windows": totals.windows,
            "latest_window": None,
            "future_windows": future,
            "last_hour": None,
            "hint": EMPTY_HINT,
        }
        return _StoredSummary(body, proc, None)

    until = latest.window_end_ms
    since = until - 3_600_000
    histogram = reads.rating_histogram(conn, wt, since, until)
    count = sum(histogram.values())
    last_hour: dict[str, Any] = {
        "from": format_time(since),
        "to": format_time(until),
        "count": count,
        "ratings_per_minute": count / 60,
    }
    if count:
        stats = rating_stats(histogram)
        last_hour.update(
            {
                "avg_rating": stats.avg_rating,
                "p50_rating": stats.p50_rating,
                "p95_rating": stats.p95_rating,
                "top_movies": _top_movies_since(conn, wt, since, until, 10),
            }
        )
    body = {
        "window_type": wt,
        "windows": totals.windows,
        "latest_window": latest.record(),
        "future_windows": future,
        "last_hour": last_hour,
    }
    return _StoredSummary(body, proc, latest.window_end_ms)


def _pipeline_state(
    proc: ProcessorTotals | None, newest_end_ms: int | None, kafka: dict[str, Any]
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "valid_ratings": proc.valid if proc else 0,
        "dlq_count": proc.invalid if proc else 0,
        "late_ratings": proc.late if proc else 0,
        "future_ratings": proc.future if proc else 0,
        "newest_window_age_s": None,
        "consumer_lag": None,
        "kafka": "up" if kafka.get("up") else "down",
    }
    if newest_end_ms is not None:
        age_s = time.time() - newest_end_ms / 1000
        state["newest_window_age_s"] = round(max(age_s, 0.0), 1)
    if kafka.get("up"):
        ends = kafka["ratings_end_offsets"]
        done = proc.end_offsets if proc else {}
        state["consumer_lag"] = sum(max(0, end - int(done.get(p, 0))) for p, end in ends.items())
        state["dlq_count"] = max(state["dlq_count"], kafka["dlq_messages"])
    return state
