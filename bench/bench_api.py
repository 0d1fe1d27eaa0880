"""Latency of /metrics/summary and /metrics/windows at a fixed request rate.

    .venv/bin/python bench/bench_api.py [--windows 10000] [--rate 200] [--seconds 20]
                                        [--commit-every 10]

Stores WINDOWS one-minute windows through the pipeline's own commit code (about 150 movies per
window), serves the API with uvicorn on its own port, and sends requests open-loop at RATE per
second (latency counted from the scheduled send time, so a slow server cannot hide queueing) while
a writer commits one more window every COMMIT_EVERY seconds, as the stream processor does per
micro-batch: each commit invalidates the API's cached answers, so the numbers include the
recomputations. ``after_commit_median_ms`` is a single request right after a commit (a cache miss).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np
from stack import bench_stack, serve_api

W = 60_000


class Writer:
    """Stores WINDOWS windows, then (while running) commits one more window every INTERVAL s,
    as the stream processor does once per micro-batch; each commit invalidates the API's cache."""

    def __init__(self, windows: int) -> None:
        from cinestream.settings import Settings
        from cinestream.store.connection import connect

        self.conn = connect(Settings().resolved_database_url, autocommit=True)
        self.rng = np.random.default_rng(1)
        self.next_ms = (int(time.time() * 1000) // W - windows) * W
        self.batch_id = 0
        self.commits = 0
        for first in range(0, windows, 500):
            self.commit(min(500, windows - first))
        self._stop = threading.Event()

    def commit(self, n: int) -> None:
        """Commit the next ``n`` one-minute windows of 400 ratings each as one micro-batch."""
        from cinestream.store.windows import BatchCommit, commit_batch
        from cinestream.stream.cells import BatchCells

        rows = []
        for w in range(n):
            ws = self.next_ms + w * W
            movies = self.rng.zipf(1.3, 400) % 10_000 + 1
            halves = self.rng.integers(1, 11, 400)
            cells: dict[tuple[int, int], int] = {}
            for m, h in zip(movies.tolist(), halves.tolist(), strict=True):
                cells[(m, h)] = cells.get((m, h), 0) + 1
            rows += [("tumbling_1min", ws, ws + W, m, h, c) for (m, h), c in cells.items()]
        commit_batch(
            self.conn,
            BatchCommit(
                checkpoint="bench",
                topic="ratings",
                topic_id=None,
                batch_id=self.batch_id,
                cells_csv=BatchCells.from_rows(rows).to_csv(),
                invalid=0,
                max_event_ms=None,
                wall_clock_ms=int(time.time() * 1000),
                allowed_lateness_ms=0,
                end_offsets={},
                primary_window_type="tumbling_1min",
            ),
        )
        self.batch_id += 1
        self.next_ms += n * W

    def run_every(self, interval_s: float) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.commit(1)
                self.commits += 1

        self._stop.clear()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()


def load(url: str, rate: float, seconds: float, workers: int = 32) -> list[float]:
    """Open-loop load: request i is due at start + i/rate; latency counts from that instant.

    Each worker thread keeps one keep-alive ``http.client`` connection, opened before the clock
    starts (a client that is cheap on the CPU matters: it shares the 2 cores with the server).
    """
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    local = threading.local()
    ready = threading.Barrier(workers)

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        conn.request("GET", target)
        conn.getresponse().read()
        return conn

    def warm(_: int) -> None:
        local.conn = connect()
        ready.wait()

    def one(i: int) -> float:
        scheduled = began + i / rate
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        conn = getattr(local, "conn", None) or connect()
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            local.conn = conn = connect()  # the server closed an idle keep-alive connection
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status} from {url}: {body[:200]!r}")
        local.conn = conn
        return time.perf_counter() - scheduled

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(warm, range(workers)))
        began = time.perf_counter() + 0.2
        return list(pool.map(one, range(int(rate * seconds))))


def _get_ms(url: str) -> float:
    began = time.perf_counter()
    with urlopen(url, timeout=10) as response:  # noqa: S310 - a local URL built here
        response.read()
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--commit-every",
        type=float,
        default=10,
        help="seconds between micro-batch commits during the load (0: none); default 10, the "
        "processor's default trigger interval",
    )
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results: dict[str, object] = {}
    with bench_stack("bench-api", 29192, 25532, CINESTREAM_API_PORT=str(port)) as state:
        print(f"storing {args.windows:,} windows ...", flush=True)
        began = time.monotonic()
        writer = Writer(args.windows)
        print(f"stored in {time.monotonic() - began:.0f}s", flush=True)
        try:
            with serve_api(state, port) as base:
                for path in ("/metrics/summary", "/metrics/windows?limit=100"):
                    # A request right after a commit recomputes its answer from the store.
                    misses = []
                    for _ in range(20):
                        writer.commit(1)
                        time.sleep(0.1)  # the commit's notification reaches the API
                        misses.append(_get_ms(base + path))
                    load(base + path, 20, 2)  # warm the pool
                    commits_before = writer.commits
                    thread = writer.run_every(args.commit_every) if args.commit_every else None
                    latencies = sorted(load(base + path, args.rate, args.seconds))
                    if thread:
                        writer.stop(thread)
                    print(f"{path}: {len(latencies)} requests", flush=True)
                    results[path] = {
                        "requests": len(latencies),
                        "commits_during_load": writer.commits - commits_before,
                        "p50_ms": round(statistics.median(latencies) * 1000, 2),
                        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
                        "max_ms": round(latencies[-1] * 1000, 2),
                        "after_commit_median_ms": round(statistics.median(misses), 2),
                    }
        finally:
            writer.conn.close()
    print(
        json.dumps(
            {
                "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "windows": args.windows,
                "rate_per_s": args.rate,
                "seconds": args.seconds,
                "commit_every_s": args.commit_every,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
