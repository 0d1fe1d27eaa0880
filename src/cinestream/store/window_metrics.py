"""The ``window_metrics`` table and how its rows are derived from the stored aggregates.

Both writers (the stream's commit, :mod:`cinestream.store.commit`, and the backfill's
replacement, :mod:`cinestream.store.replace`) stage their cells with :func:`stage_cells` and
derive ``window_metrics`` through :func:`finalize_windows`: one definition, two drivers. The
ms/timestamptz edge and the column list the readers use live here too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from cinestream.metrics import TOP_MOVIES_LIMIT, WindowMetric, window_metric
from cinestream.schemas import CELL_FIELDS

WindowKey = tuple[str, int]  # (window_type, window_start_ms)

# A window's detail, from which its metrics are derived: each table and the column that keys its
# counts within a window (the histogram of half stars, the count per movie).
DETAIL_TABLES = (("window_rating_counts", "half_stars"), ("window_movie_counts", "movie_id"))

# The edge between the pipeline's epoch milliseconds and window_metrics' timestamptz columns,
# both exact (integer milliseconds; extract() returns numeric).
MS_TO_TIMESTAMPTZ = "(to_timestamp(0) + {} * interval '1 millisecond')"
TIMESTAMPTZ_TO_MS = "(extract(epoch FROM {}) * 1000)::bigint"
METRIC_COLUMNS = (
    "window_type, "
    + TIMESTAMPTZ_TO_MS.format("window_start")
    + " AS window_start_ms, "
    + TIMESTAMPTZ_TO_MS.format("window_end")
    + " AS window_end_ms, count, avg_rating, p50_rating, p95_rating, top_movies, "
    + TIMESTAMPTZ_TO_MS.format("processing_time")
    + " AS processing_time_ms"
)


def metric_from_row(row: Sequence[Any]) -> WindowMetric:
    """A ``SELECT {METRIC_COLUMNS}`` row as a :class:`WindowMetric`."""
    return WindowMetric(
        window_type=row[0],
        window_start_ms=int(row[1]),
        window_end_ms=int(row[2]),
        count=int(row[3]),
        avg_rating=float(row[4]),
        p50_rating=float(row[5]),
        p95_rating=float(row[6]),
        top_movies=row[7],
        processing_time_ms=int(row[8]),
    )


# --------------------------------------------------------------------------------------------
# Deriving the metrics (shared by stream and backfill)
# --------------------------------------------------------------------------------------------
def finalize_windows(
    conn: psycopg.Connection[Any],
    keys: Iterable[WindowKey],
    processing_time_ms: int | None = None,
) -> list[WindowMetric]:
    """Recompute ``window_metrics`` for ``keys`` from the stored aggregates and upsert them."""
    keys = sorted(set(keys))
    if not keys:
        return []
    params = ([k[0] for k in keys], [k[1] for k in keys])
    key_cte = "WITH k AS (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS k(wt, ws))"
    histograms: dict[WindowKey, dict[int, int]] = defaultdict(dict)
    for wt, ws, half_stars, count in conn.execute(
        key_cte + " SELECT c.window_type, c.window_start_ms, c.half_stars, c.count "
        "FROM window_rating_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws",
        params,
    ):
        histograms[(wt, ws)][half_stars] = count
    # Only each window's leaders leave the database: the SPEC's order (most ratings first, the
    # smaller id on ties) ranked there, so a window of 10,000 movies sends 10 rows, not 10,000.
    movies: dict[WindowKey, list[tuple[int, int]]] = defaultdict(list)
    for wt, ws, movie_id, count in conn.execute(
        key_cte + ", ranked AS ("
        " SELECT c.window_type, c.window_start_ms, c.movie_id, c.count, row_number() OVER ("
        "   PARTITION BY c.window_type, c.window_start_ms ORDER BY c.count DESC, c.movie_id"
        " ) AS rank"
        " FROM window_movie_counts c JOIN k ON c.window_type = k.wt AND c.window_start_ms = k.ws"
        " WHERE c.count > 0)"
        " SELECT window_type, window_start_ms, movie_id, count FROM ranked WHERE rank <= %s",
        (*params, TOP_MOVIES_LIMIT),
    ):
        movies[(wt, ws)].append((movie_id, count))
    ends = {
        (wt, ws): we
        for wt, ws, we in conn.execute(
            key_cte
            + " SELECT s.window_type, s.window_start_ms, s.window_end_ms FROM window_state s"
            " JOIN k ON s.window_type = k.wt AND s.window_start_ms = k.ws",
            params,
        )
    }
    results = [
        window_metric(key[0], key[1], ends[key], histograms[key], movies[key], processing_time_ms)
        for key in keys
        if sum(histograms.get(key, {}).values()) > 0
    ]
    upsert_window_metrics(conn, results)
    # Each changed metric is pending publication until a publisher writes this version.
    conn.execute(
        "UPDATE window_state s SET version = s.version + 1 "
        "FROM unnest(%s::text[], %s::bigint[]) AS k(wt, ws) "
        "WHERE s.window_type = k.wt AND s.window_start_ms = k.ws",
        ([m.window_type for m in results], [m.window_start_ms for m in results]),
    )
    return results


def upsert_window_metrics(conn: psycopg.Connection[Any], rows: Sequence[WindowMetric]) -> None:
    """Insert or replace ``window_metrics`` rows, keyed by (window_type, window_start)."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""
            INSERT INTO window_metrics (window_start, window_end, window_type, count, avg_rating,
                                        p50_rating, p95_rating, top_movies, processing_time)
            VALUES ({MS_TO_TIMESTAMPTZ.format("%(window_start_ms)s")},
                    {MS_TO_TIMESTAMPTZ.format("%(window_end_ms)s")},
                    %(window_type)s, %(count)s, %(avg_rating)s,
                    %(p50_rating)s, %(p95_rating)s, %(top_movies)s,
                    {MS_TO_TIMESTAMPTZ.format("%(processing_time_ms)s")})
            ON CONFLICT (window_type, window_start) DO UPDATE SET
                window_end = EXCLUDED.window_end, count = EXCLUDED.count,
                avg_rating = EXCLUDED.avg_rating, p50_rating = EXCLUDED.p50_rating,
                p95_rating = EXCLUDED.p95_rating, top_movies = EXCLUDED.top_movies,
                processing_time = EXCLUDED.processing_time
            """,
            [dict(r.__dict__) for r in rows],
        )


def stage_cells(conn: psycopg.Connection[Any], cells_csv: bytes) -> None:
    """Load a batch's cells (``schemas.CELL_FIELDS`` rows, CSV) into the transaction's temporary
    ``batch_cells`` table."""
    conn.execute(
        """
        CREATE TEMP TABLE batch_cells (
            window_type text, window_start_ms bigint, window_end_ms bigint,
            movie_id bigint, half_stars smallint, n bigint, future bigint
        ) ON COMMIT DROP
        """
    )
    with conn.cursor().copy(
        f"COPY batch_cells ({', '.join(CELL_FIELDS)}) FROM STDIN WITH (FORMAT csv)"
    ) as copy:
        copy.write(cells_csv)
