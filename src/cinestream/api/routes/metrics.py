"""``/metrics/summary``, ``/metrics/windows`` and ``/metrics/top-movies``."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from psycopg.rows import dict_row

from cinestream.api.deps import KafkaDep, ReaderDep, SettingsDep
from cinestream.api.models import Summary, TopMovies, WindowRecord
from cinestream.metrics import nearest_rank, top_movies
from cinestream.schemas import format_time, metric_record, parse_time
from cinestream.windows import WindowTypeError, parse_window_type

router = APIRouter(prefix="/metrics", tags=["metrics"])

EMPTY_HINT = (
    "no windows yet: produce ratings (`cinestream generate --count 40400`) and run the processor "
    "(`cinestream process --trigger available-now`), or start everything with `make up`"
)


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(
            422, f"invalid parameters: {name}: not an ISO-8601 time: {value!r}"
        ) from exc


def _window_type(settings: Any, value: str | None) -> str:
    name = value or settings.window_types[0]
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
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> Response:
    wt = _window_type(settings, window_type)
    start_t, end_t = _instant(start, "start"), _instant(end, "end")
    if start_t and end_t and end_t <= start_t:
        raise HTTPException(422, "invalid parameters: end must be after start")

    def query(conn: Any) -> bytes:
        with conn.cursor(row_factory=dict_row) as cur:
            if start_t is None and end_t is None:
                # The newest `limit` windows, oldest first.
                cur.execute(
                    "SELECT * FROM (SELECT * FROM window_metrics WHERE window_type = %s "
                    "ORDER BY window_start DESC LIMIT %s) w ORDER BY window_start",
                    (wt, limit),
                )
            else:
                cur.execute(
                    "SELECT * FROM window_metrics WHERE window_type = %s "
                    "AND window_start >= coalesce(%s, '-infinity'::timestamptz) "
                    "AND window_start < coalesce(%s, 'infinity'::timestamptz) "
                    "ORDER BY window_start LIMIT %s",
                    (wt, start_t, end_t, limit),
                )
            return _dumps([metric_record(row) for row in cur.fetchall()])

    return json_response(reader.read(("windows", wt, start_t, end_t, limit), query))


def _top_movies_since(
    conn: Any, window_type: str, since_ms: int, until_ms: int, limit: int
) -> list[dict[str, int]]:
    rows = conn.execute(
        "SELECT movie_id, sum(count)::bigint FROM window_movie_counts "
        "WHERE window_type = %s AND window_start_ms >= %s AND window_start_ms < %s "
        "GROUP BY movie_id",
        (window_type, since_ms, until_ms),
    ).fetchall()
    counts = dict(rows)
    return [{"movie_id": m, "ratings": int(counts[m])} for m in top_movies(rows, limit)]


def _newest_end_ms(conn: Any, window_type: str) -> int | None:
    """End of the newest window that has ratings (walks the primary key from the newest)."""
    row = conn.execute(
        "SELECT window_start_ms FROM window_state s WHERE window_type = %s "
        "AND EXISTS (SELECT 1 FROM window_rating_counts c WHERE c.window_type = s.window_type "
        "AND c.window_start_ms = s.window_start_ms) ORDER BY window_start_ms DESC LIMIT 1",
        (window_type,),
    ).fetchone()
    if row is None:
        return None
    return int(row[0]) + parse_window_type(window_type).size_ms


@router.get(
    "/top-movies",
    summary="Most-rated movies over the last minutes of event time",
    response_model=TopMovies,
)
def top_movies_route(
    reader: ReaderDep,
    settings: SettingsDep,
    minutes: Annotated[
        int, Query(ge=1, le=10_080, description="minutes before the newest window's end")
    ] = 60,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Response:
    wt = settings.window_types[0]

    def query(conn: Any) -> bytes:
        until = _newest_end_ms(conn, wt)
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

    return json_response(reader.read(("top-movies", wt, minutes, limit), query))


@dataclass(frozen=True)
class _StoredSummary:
    """The part of a summary that only changes when the store does."""

    body: dict[str, Any]
    processor: dict[str, Any] | None
    newest_end: datetime | None


@router.get(
    "/summary",
    summary="Latest window, last hour's totals and the pipeline's state",
    response_model=Summary,
)
def summary(reader: ReaderDep, settings: SettingsDep, kafka: KafkaDep) -> Response:
    wt = settings.window_types[0]
    stored = reader.read(("summary", wt), lambda conn: _stored_summary(conn, wt))
    pipeline = _pipeline_state(stored.processor, stored.newest_end, kafka.snapshot())
    return json_response({**stored.body, "pipeline": pipeline})


def _stored_summary(conn: Any, wt: str) -> _StoredSummary:
    size_ms = parse_window_type(wt).size_ms
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT count(*) AS n FROM window_metrics WHERE window_type = %s", (wt,))
        total_windows = cur.fetchone()["n"]
        cur.execute(
            "SELECT * FROM window_metrics WHERE window_type = %s ORDER BY window_start DESC "
            "LIMIT 1",
            (wt,),
        )
        latest = cur.fetchone()
        cur.execute(
            "SELECT coalesce(sum(valid_total), 0) AS valid, coalesce(sum(invalid_total), 0) AS "
            "invalid, coalesce(sum(late_total), 0) AS late, max(watermark_ms) AS watermark, "
            "(array_agg(end_offsets ORDER BY updated_at DESC))[1] AS offsets "
            "FROM processor_state"
        )
        proc = cur.fetchone()
    if latest is None:
        body = {
            "window_type": wt,
            "windows": 0,
            "latest_window": None,
            "last_hour": None,
            "hint": EMPTY_HINT,
        }
        return _StoredSummary(body, proc, None)

    until = int(latest["window_start"].timestamp() * 1000) + size_ms
    since = until - 3_600_000
    histogram: dict[int, int] = defaultdict(int)
    for half, n in conn.execute(
        "SELECT half_stars, sum(count)::bigint FROM window_rating_counts WHERE window_type = %s "
        "AND window_start_ms >= %s AND window_start_ms < %s GROUP BY half_stars",
        (wt, since, until),
    ):
        histogram[half] = int(n)
    count = sum(histogram.values())
    last_hour: dict[str, Any] = {
        "from": format_time(since),
        "to": format_time(until),
        "count": count,
        "ratings_per_minute": count / 60,
    }
    if count:
        last_hour.update(
            {
                "avg_rating": sum(h * n for h, n in histogram.items()) / (2 * count),
                "p50_rating": nearest_rank(histogram, 0.5),
                "p95_rating": nearest_rank(histogram, 0.95),
                "top_movies": _top_movies_since(conn, wt, since, until, 10),
            }
        )
    body = {
        "window_type": wt,
        "windows": total_windows,
        "latest_window": metric_record(latest),
        "last_hour": last_hour,
    }
    return _StoredSummary(body, proc, latest["window_end"])


def _pipeline_state(
    proc: dict[str, Any] | None, newest_end: datetime | None, kafka: dict[str, Any]
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "valid_ratings": int(proc["valid"]) if proc else 0,
        "dlq_count": int(proc["invalid"]) if proc else 0,
        "late_ratings": int(proc["late"]) if proc else 0,
        "newest_window_age_s": None,
        "consumer_lag": None,
        "kafka": "up" if kafka.get("up") else "down",
    }
    if newest_end is not None:
        age = datetime.now(tz=UTC) - newest_end
        state["newest_window_age_s"] = round(max(age, timedelta(0)).total_seconds(), 1)
    if kafka.get("up"):
        ends = kafka["ratings_end_offsets"]
        done = (proc or {}).get("offsets") or {}
        state["consumer_lag"] = sum(max(0, end - int(done.get(p, 0))) for p, end in ends.items())
        state["dlq_count"] = max(state["dlq_count"], kafka["dlq_messages"])
    return state
