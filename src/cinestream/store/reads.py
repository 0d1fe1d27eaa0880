"""Every query the API, ``doctor``, the quality checks and the Airflow tasks run on the store.

Functions take an open connection and return plain values or :class:`WindowMetric`s with times in
epoch milliseconds; callers never write SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from cinestream.metrics import WindowMetric
from cinestream.store.connection import one
from cinestream.store.schema import CHANGE_CHANNEL
from cinestream.store.window_metrics import (
    METRIC_COLUMNS,
    MS_TO_TIMESTAMPTZ,
    TIMESTAMPTZ_TO_MS,
    metric_from_row,
)


def ping(conn: psycopg.Connection[Any]) -> None:
    """Raise unless the connection answers."""
    conn.execute("SELECT 1")


def listen_for_changes(conn: psycopg.Connection[Any]) -> None:
    """Subscribe an autocommit connection to the store's change notifications."""
    conn.execute(f"LISTEN {CHANGE_CHANNEL}")


def database_clock(conn: psycopg.Connection[Any]) -> datetime:
    """The database's ``now()`` (what ``window_state.updated_at`` is compared with)."""
    (now,) = one(conn, "SELECT now()")
    return now  # type: ignore[no-any-return]


# --- window_metrics ---------------------------------------------------------------------------
def newest_windows(
    conn: psycopg.Connection[Any], window_type: str, limit: int, now_ms: int
) -> list[WindowMetric]:
    """The newest ``limit`` windows of a type that have started by ``now_ms`` (the live state;
    windows of a producer's future clock are not part of it), oldest first."""
    rows = conn.execute(
        f"SELECT * FROM (SELECT {METRIC_COLUMNS}, window_start FROM window_metrics "
        f"WHERE window_type = %s AND window_start <= {MS_TO_TIMESTAMPTZ.format('%s::bigint')} "
        "ORDER BY window_start DESC LIMIT %s) w ORDER BY window_start",
        (window_type, now_ms, limit),
    ).fetchall()
    return [metric_from_row(r) for r in rows]


def windows_between(
    conn: psycopg.Connection[Any],
    window_type: str | None,
    start_ms: int | None,
    end_ms: int | None,
    limit: int | None = None,
) -> list[WindowMetric]:
    """Windows starting in ``[start_ms, end_ms)`` (open ends: unbounded), of one type or all,
    ordered by type and start."""
    rows = conn.execute(
        f"SELECT {METRIC_COLUMNS} FROM window_metrics "
        "WHERE (%(wt)s::text IS NULL OR window_type = %(wt)s) "
        f"AND window_start >= coalesce({MS_TO_TIMESTAMPTZ.format('%(start)s::bigint')}, "
        "'-infinity') "
        f"AND window_start < coalesce({MS_TO_TIMESTAMPTZ.format('%(end)s::bigint')}, 'infinity') "
        "ORDER BY window_type, window_start LIMIT %(limit)s",
        {"wt": window_type, "start": start_ms, "end": end_ms, "limit": limit},
    ).fetchall()
    return [metric_from_row(r) for r in rows]


def latest_window(
    conn: psycopg.Connection[Any], window_type: str, now_ms: int
) -> WindowMetric | None:
    """The newest window of a type that has started by ``now_ms``, if any."""
    newest = newest_windows(conn, window_type, 1, now_ms)
    return newest[0] if newest else None


@dataclass(frozen=True)
class FutureWindows:
    """Windows that start after the wall clock: a producer's clock ahead (never the live state)."""

    windows: int
    ratings: int
    first_start_ms: int | None
    last_start_ms: int | None


def future_windows(conn: psycopg.Connection[Any], window_type: str, now_ms: int) -> FutureWindows:
    """How many windows of a type start after ``now_ms``, their ratings and their range."""
    n, ratings, first, last = one(
        conn,
        "SELECT count(*), coalesce(sum(count), 0), "
        f"min({TIMESTAMPTZ_TO_MS.format('window_start')}), "
        f"max({TIMESTAMPTZ_TO_MS.format('window_start')}) FROM window_metrics "
        f"WHERE window_type = %s AND window_start > {MS_TO_TIMESTAMPTZ.format('%s::bigint')}",
        (window_type, now_ms),
    )
    return FutureWindows(
        int(n),
        int(ratings),
        None if first is None else int(first),
        None if last is None else int(last),
    )


@dataclass(frozen=True)
class WindowTotals:
    """How many windows of a type ``window_metrics`` holds and the ratings they count."""

    windows: int
    ratings: int


def window_totals(conn: psycopg.Connection[Any], window_type: str) -> WindowTotals:
    """Count and total ratings of the windows of a type."""
    windows, ratings = one(
        conn,
        "SELECT count(*), coalesce(sum(count), 0) FROM window_metrics WHERE window_type = %s",
        (window_type,),
    )
    return WindowTotals(int(windows), int(ratings))


# --- the window store's aggregates ------------------------------------------------------------
def rating_histogram(
    conn: psycopg.Connection[Any], window_type: str, since_ms: int, until_ms: int
) -> dict[int, int]:
    """Ratings per half star over the windows starting in ``[since_ms, until_ms)``."""
    return {
        int(half): int(n)
        for half, n in conn.execute(
            "SELECT half_stars, sum(count)::bigint FROM window_rating_counts "
            "WHERE window_type = %s AND window_start_ms >= %s AND window_start_ms < %s "
            "GROUP BY half_stars",
            (window_type, since_ms, until_ms),
        )
    }


def top_movie_counts(
    conn: psycopg.Connection[Any], window_type: str, since_ms: int, until_ms: int, limit: int
) -> list[tuple[int, int]]:
    """The ``limit`` most-rated (movie_id, ratings) over the windows starting in
    ``[since_ms, until_ms)``, most first, ties broken by the smaller id (as
    :func:`cinestream.metrics.top_movies` ranks them). Ranked in PostgreSQL: a day of per-movie
    rows stays in the database instead of crossing into the API to be sorted there."""
    return [
        (int(movie), int(n))
        for movie, n in conn.execute(
            "SELECT movie_id, sum(count)::bigint AS n FROM window_movie_counts "
            "WHERE window_type = %s AND window_start_ms >= %s AND window_start_ms < %s "
            "GROUP BY movie_id HAVING sum(count) > 0 ORDER BY n DESC, movie_id LIMIT %s",
            (window_type, since_ms, until_ms, limit),
        )
    ]


def newest_window_start_ms(
    conn: psycopg.Connection[Any], window_type: str, now_ms: int
) -> int | None:
    """Start of the newest window started by ``now_ms`` that has ratings (an index walk from
    the newest)."""
    row = conn.execute(
        "SELECT window_start_ms FROM window_state s WHERE window_type = %s "
        "AND window_start_ms <= %s "
        "AND EXISTS (SELECT 1 FROM window_rating_counts c WHERE c.window_type = s.window_type "
        "AND c.window_start_ms = s.window_start_ms) ORDER BY window_start_ms DESC LIMIT 1",
        (window_type, now_ms),
    ).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class WindowsChanged:
    """Windows whose state changed since an instant, and the event-time range they span."""

    count: int
    first_start_ms: int | None
    last_end_ms: int | None


def windows_changed_since(conn: psycopg.Connection[Any], since: datetime) -> WindowsChanged:
    """Which windows a job changed: those with ``window_state.updated_at >= since``."""
    n, first, last = one(
        conn,
        "SELECT count(*), min(window_start_ms), max(window_end_ms) FROM window_state "
        "WHERE updated_at >= %s",
        (since,),
    )
    return WindowsChanged(
        int(n), None if first is None else int(first), None if last is None else int(last)
    )


# --- the processors ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSnapshot:
    """What the stream had committed at one instant: where it had read to, its watermark, and
    the late counts of the windows of a range (what a backfill recomputes against)."""

    end_offsets: dict[str, int] | None
    watermark_ms: int | None
    late_counts: dict[tuple[str, int], int]


def stream_snapshot(conn: psycopg.Connection[Any], start_ms: int, end_ms: int) -> StreamSnapshot:
    """The store's committed state (whichever checkpoint committed it) and the late counts of
    windows in ``[start_ms, end_ms)``, read in one consistent snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _stream_state(conn, start_ms, end_ms)


# (version, published_version) of a window: a window with version > published_version is
# committed to PostgreSQL and not yet written to the metrics topic.
WindowVersions = dict[tuple[str, int], tuple[int, int]]


def audit_snapshot(
    conn: psycopg.Connection[Any], start_ms: int, end_ms: int
) -> tuple[StreamSnapshot, list[WindowMetric], WindowVersions]:
    """:func:`stream_snapshot`, the windows of every type starting in ``[start_ms, end_ms)`` and
    their versions, all read in one consistent snapshot (what ``cinestream audit`` compares)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        state = _stream_state(conn, start_ms, end_ms)
        windows = windows_between(conn, None, start_ms, end_ms)
        return state, windows, window_versions(conn, start_ms, end_ms)


def window_versions(conn: psycopg.Connection[Any], start_ms: int, end_ms: int) -> WindowVersions:
    """``(version, published_version)`` of every window of every type starting in
    ``[start_ms, end_ms)`` (publication of committed windows to the metrics topic)."""
    rows = conn.execute(
        "SELECT window_type, window_start_ms, version, published_version FROM window_state "
        "WHERE window_start_ms >= %s AND window_start_ms < %s",
        (start_ms, end_ms),
    ).fetchall()
    return {(wt, int(ws)): (int(v), int(p)) for wt, ws, v, p in rows}


@dataclass(frozen=True)
class Unpublished:
    """What the store holds committed but not yet published: windows whose metric is not in the
    metrics topic yet, and invalid records waiting in the DLQ's outbox."""

    windows: int
    dlq_records: int


def unpublished(conn: psycopg.Connection[Any]) -> Unpublished:
    """:class:`Unpublished` now (a processor publishes both after every commit)."""
    (windows,) = one(conn, "SELECT count(*) FROM window_state WHERE version > published_version")
    (records,) = one(conn, "SELECT count(*) FROM dlq_outbox")
    return Unpublished(int(windows), int(records))


def _stream_state(conn: psycopg.Connection[Any], start_ms: int, end_ms: int) -> StreamSnapshot:
    row = conn.execute("SELECT end_offsets, watermark_ms FROM pipeline").fetchone()
    late = conn.execute(
        "SELECT window_type, window_start_ms, late_count FROM window_state "
        "WHERE window_start_ms >= %s AND window_start_ms < %s AND late_count > 0",
        (start_ms, end_ms),
    ).fetchall()
    offsets = None if row is None else {str(k): int(v) for k, v in (row[0] or {}).items()}
    return StreamSnapshot(
        offsets,
        None if row is None else int(row[1]),
        {(wt, int(ws)): int(n) for wt, ws, n in late},
    )


@dataclass(frozen=True)
class ProcessorTotals:
    """What the processors have committed: rating counts, newest watermark, last end offsets."""

    valid: int
    invalid: int
    late: int
    future: int
    watermark_ms: int | None
    end_offsets: dict[str, int]


def processor_totals(
    conn: psycopg.Connection[Any], checkpoint: str | None = None
) -> ProcessorTotals | None:
    """Totals of one checkpoint's processor, or of all of them; None when none has committed."""
    valid, invalid, late, future, watermark, offsets, n = one(
        conn,
        "SELECT coalesce(sum(valid_total), 0), coalesce(sum(invalid_total), 0), "
        "coalesce(sum(late_total), 0), coalesce(sum(future_total), 0), max(watermark_ms), "
        "(array_agg(end_offsets ORDER BY updated_at DESC))[1], count(*) "
        "FROM processor_state WHERE %(c)s::text IS NULL OR checkpoint = %(c)s",
        {"c": checkpoint},
    )
    if not n:
        return None
    return ProcessorTotals(
        int(valid),
        int(invalid),
        int(late),
        int(future),
        None if watermark is None else int(watermark),
        {str(k): int(v) for k, v in (offsets or {}).items()},
    )
