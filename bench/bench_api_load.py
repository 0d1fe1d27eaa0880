"""The API under a random mix of valid and invalid parameters on every endpoint, open-loop.

    .venv/bin/python bench/bench_api_load.py [--windows 10000] [--rate 200] [--seconds 30]
                                             [--commit-every 10] [--seed 1]

Stores WINDOWS one-minute windows through the pipeline's commit code (``bench_api.Writer``, about
140 movies per window), serves the API with uvicorn on its own port, and sends requests open-loop
at RATE per second for SECONDS (latency counted from each request's scheduled send time, so a slow
server cannot hide queueing) while the writer commits one more window every COMMIT_EVERY seconds
as the stream processor does per micro-batch (each commit drops the API's cached answers).

The mix, drawn from SEED: a quarter ``/metrics/health``, the rest ``summary``, ``windows`` with
random ``start``/``end``/``limit`` and ``top-movies`` with random ``minutes``/``limit`` (limits and
minutes log-uniform up to the largest the API ever took, so some are beyond today's bounds), a
quarter of those malformed or out of range (``start=0001-01-01T00:00:00+01:00``, ``limit=many``,
an overflowing window type ...). Almost every ``windows`` and ``top-movies`` request misses the
cache. Reports p50/p99 of ``/metrics/health`` and of the whole mix, per endpoint, and the answers
by status (a 500 is a defect; its traceback is in ``.state-bench-api-load/api.log``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import socket
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
from bench_api import Writer
from stack import bench_stack, serve_api

W = 60_000
# The largest values the API has ever accepted (before issue 20): the mix draws up to these.
MAX_MINUTES_EVER = 10_080
MAX_WINDOWS_LIMIT_EVER = 10_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_uniform(rng: random.Random, high: int) -> int:
    return max(1, int(math.exp(rng.uniform(0, math.log(high)))))


class Mix:
    """Random requests over the stored range ``[first_ms, last_ms)``: (endpoint, target)."""

    def __init__(self, seed: int, first_ms: int, last_ms: int) -> None:
        self.rng = random.Random(seed)
        self.first_ms, self.last_ms = first_ms, last_ms

    def next(self) -> tuple[str, str]:
        roll = self.rng.random()
        if roll < 0.25:
            return "/metrics/health", "/metrics/health"
        if roll < 0.40:
            return "/metrics/summary", "/metrics/summary"
        if roll < 0.70:
            return self._target("/metrics/windows", self._windows_params())
        return self._target("/metrics/top-movies", self._top_movies_params())

    @staticmethod
    def _target(path: str, params: dict[str, str]) -> tuple[str, str]:
        return path, path + ("?" + urlencode(params) if params else "")

    def _windows_params(self) -> dict[str, str]:
        rng = self.rng
        if rng.random() < 0.25:
            return rng.choice(
                [
                    {"limit": "0"},
                    {"limit": "many"},
                    {"limit": str(10**9)},
                    {"start": "yesterday"},
                    {"start": "0001-01-01T00:00:00+01:00"},
                    {"end": "9999-12-31T23:59:59-01:00"},
                    {"start": "1970-01-01T00:00:00Z"},
                    {"start": "2200-01-01T00:00:00Z"},
                    {"start": _iso(self.last_ms), "end": _iso(self.first_ms)},
                    {"window_type": "weekly"},
                    {"window_type": "tumbling_" + "9" * 400 + "min"},
                ]
            )
        params = {"limit": str(_log_uniform(rng, MAX_WINDOWS_LIMIT_EVER))}
        shape = rng.random()
        if shape < 0.3:
            return params  # the newest windows
        start = rng.randrange(self.first_ms, self.last_ms, W)
        params["start"] = _iso(start)
        if shape < 0.65:
            params["end"] = _iso(start + _log_uniform(rng, 14 * 24 * 60) * W)
        return params

    def _top_movies_params(self) -> dict[str, str]:
        rng = self.rng
        if rng.random() < 0.25:
            return rng.choice(
                [
                    {"minutes": "0"},
                    {"minutes": str(10**7)},
                    {"minutes": "1" * 30},
                    {"minutes": "an hour"},
                    {"limit": "1000"},
                    {"limit": "-1"},
                ]
            )
        return {
            "minutes": str(_log_uniform(rng, MAX_MINUTES_EVER)),
            "limit": str(rng.randint(1, 100)),
        }


def load(
    base: str, requests: list[tuple[str, str]], rate: float, workers: int = 48
) -> list[tuple[str, str, float]]:
    """Open-loop: request i is due at start + i/rate; returns (endpoint, status, seconds late)
    with the latency counted from that instant. One keep-alive connection per worker thread."""
    host, port = base.rsplit("//", 1)[1].split(":")
    local = threading.local()
    ready = threading.Barrier(workers)

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(host, int(port), timeout=30)

    def warm(_: int) -> None:
        local.conn = connect()
        local.conn.request("GET", "/metrics/health")
        local.conn.getresponse().read()
        ready.wait()

    def get(target: str) -> str:
        conn = getattr(local, "conn", None) or connect()
        try:
            conn.request("GET", target)
            response = conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
            conn.close()  # the server closed an idle keep-alive connection: once more
            conn = connect()
            conn.request("GET", target)
            response = conn.getresponse()
        response.read()
        local.conn = conn
        return str(response.status)

    def one(i: int) -> tuple[str, str, float]:
        endpoint, target = requests[i]
        scheduled = began + i / rate
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            status = get(target)
        except (OSError, http.client.HTTPException) as exc:
            local.conn = None
            status = f"client error: {type(exc).__name__}"
        return endpoint, status, time.perf_counter() - scheduled

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(warm, range(workers)))
        began = time.perf_counter() + 0.2
        return list(pool.map(one, range(len(requests))))


def latency(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds (p99 as bench_api.py takes it)."""
    s = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 1),
        "p99_ms": round(s[max(0, int(len(s) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(s[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--commit-every",
        type=float,
        default=10,
        help="seconds between micro-batch commits during the load (0: none); default 10",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with bench_stack("bench-api-load", 29692, 25832) as state:
        print(f"storing {args.windows:,} windows ...", flush=True)
        began = time.monotonic()
        writer = Writer(args.windows)
        print(f"stored in {time.monotonic() - began:.0f}s", flush=True)
        mix = Mix(args.seed, writer.next_ms - args.windows * W, writer.next_ms)
        requests = [mix.next() for _ in range(int(args.rate * args.seconds))]
        try:
            with serve_api(state, port) as base:
                for path in ("/metrics/summary", "/metrics/windows", "/metrics/top-movies"):
                    httpx.get(base + path, timeout=30)  # first answers, pool warm
                commits_before = writer.commits
                thread = writer.run_every(args.commit_every) if args.commit_every else None
                t0 = time.perf_counter()
                results = load(base, requests, args.rate)
                wall = time.perf_counter() - t0
                if thread:
                    writer.stop(thread)
        finally:
            writer.conn.close()
    by_endpoint: dict[str, list[tuple[str, float]]] = {}
    for endpoint, status, seconds in results:
        by_endpoint.setdefault(endpoint, []).append((status, seconds))
    print(
        json.dumps(
            {
                "date": datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "windows": args.windows,
                "rate_per_s": args.rate,
                "seconds": args.seconds,
                "achieved_rate_per_s": round(len(results) / wall, 1),
                "commits_during_load": writer.commits - commits_before,
                "health": latency([s for _, s in by_endpoint["/metrics/health"]]),
                "mix": {"requests": len(results), **latency([s for *_, s in results])},
                "statuses": dict(sorted(Counter(status for _, status, _ in results).items())),
                "by_endpoint": {
                    endpoint: {
                        "requests": len(rows),
                        **latency([s for _, s in rows]),
                        "statuses": dict(sorted(Counter(status for status, _ in rows).items())),
                    }
                    for endpoint, rows in sorted(by_endpoint.items())
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
