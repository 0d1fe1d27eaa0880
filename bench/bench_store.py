"""Where a micro-batch's PostgreSQL commit spends its time, statement by statement.

    .venv/bin/python bench/bench_store.py [--ratings 500000] [--windows 50] [--movies 10000]

Builds the cells of a drain's batch (RATINGS ratings over WINDOWS one-minute windows, movies
drawn with a Zipf-like popularity, uniform half stars: the shape bench_pipeline.py's batches
have) and commits two such batches through ``store.commit.commit_batch`` on a private
PostgreSQL: the first into new windows, the second into the next WINDOWS windows plus the last
one of the first batch (as consecutive batches of a backlog do). Prints the wall time of every
SQL statement of each commit, longest first.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
import psycopg
from stack import bench_stack

W = 60_000


def batch_cells(rng: Any, ratings: int, first_ms: int, windows: int, movies: int) -> Any:
    """The aggregated cells (window, movie, half star) -> n of one batch, as BatchCells."""
    import pyarrow as pa

    from cinestream.stream.cells import BatchCells

    starts = first_ms + rng.integers(0, windows, ratings) * W
    weights = 1.0 / np.arange(1, movies + 1) ** 0.8
    movie = rng.choice(np.arange(1, movies + 1), ratings, p=weights / weights.sum())
    half = rng.integers(1, 11, ratings)
    keys, counts = np.unique(np.stack([starts, movie, half]), axis=1, return_counts=True)
    table = pa.table(
        {
            "window_type": pa.array(["tumbling_1min"] * keys.shape[1]),
            "window_start_ms": pa.array(keys[0], pa.int64()),
            "window_end_ms": pa.array(keys[0] + W, pa.int64()),
            "movie_id": pa.array(keys[1], pa.int64()),
            "half_stars": pa.array(keys[2], pa.int16()),
            "n": pa.array(counts, pa.int64()),
            "future": pa.array(np.zeros(keys.shape[1]), pa.int64()),
            "max_event_ms": pa.array(keys[0] + W - 1, pa.int64()),
        }
    )
    return BatchCells(table, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=500_000)
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--movies", type=int, default=10_000)
    args = parser.parse_args()

    timings: dict[str, float] = defaultdict(float)
    original_execute = psycopg.Connection.execute

    def timed_execute(self: Any, query: Any, *a: Any, **k: Any) -> Any:
        began = time.monotonic()
        try:
            return original_execute(self, query, *a, **k)
        finally:
            timings[" ".join(str(query).split())[:90]] += time.monotonic() - began

    with bench_stack("bench-store", 29592, 25732):
        from cinestream.settings import Settings
        from cinestream.store import commit as store_commit
        from cinestream.store.connection import connect

        settings = Settings()
        rng = np.random.default_rng(7)
        first_ms = (int(time.time() * 1000) // W - 3 * args.windows) * W
        results = []
        with connect(settings.resolved_database_url, autocommit=True) as conn:
            psycopg.Connection.execute = timed_execute  # type: ignore[method-assign]
            for batch_id in range(2):
                start = first_ms + batch_id * (args.windows - 1) * W
                cells = batch_cells(rng, args.ratings, start, args.windows, args.movies)
                began = time.monotonic()
                csv = cells.to_csv()
                handoff = time.monotonic() - began
                timings.clear()
                began = time.monotonic()
                store_commit.commit_batch(
                    conn,
                    store_commit.BatchCommit(
                        checkpoint="bench",
                        topic="bench",
                        topic_id=None,
                        batch_id=batch_id,
                        cells_csv=csv,
                        invalid=0,
                        max_event_ms=cells.max_event_ms(),
                        wall_clock_ms=int(time.time() * 1000),
                        allowed_lateness_ms=3_600_000 * 24,
                        end_offsets={"0": (batch_id + 1) * args.ratings},
                        primary_window_type="tumbling_1min",
                        start_offsets=None if batch_id == 0 else {"0": args.ratings},
                    ),
                )
                total = time.monotonic() - began
                statements = sorted(timings.items(), key=lambda kv: -kv[1])
                results.append(
                    {
                        "batch": batch_id,
                        "cells": cells.rows,
                        "to_csv_s": round(handoff, 3),
                        "commit_s": round(total, 3),
                        "statements_s": {sql: round(s, 3) for sql, s in statements[:8]},
                        "copy_and_rest_s": round(total - sum(timings.values()), 3),
                    }
                )
            psycopg.Connection.execute = original_execute  # type: ignore[method-assign]
    print(json.dumps(results, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
