"""Latency of /metrics/summary and /metrics/windows at a fixed request rate.

    .venv/bin/python bench/bench_api.py [--windows 10000] [--rate 200] [--seconds 20]

Stores WINDOWS one-minute windows through the pipeline's own commit code (about 150 movies per
window), serves the API with uvicorn on its own port, and sends requests open-loop at RATE per
second (latency counted from the scheduled send time, so a slow server cannot hide queueing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import numpy as np
from stack import bench_stack

W = 60_000


def store_windows(n: int) -> None:
    from cinestream import store
    from cinestream.settings import Settings

    settings = Settings()
    rng = np.random.default_rng(1)
    start = (int(time.time() * 1000) // W - n) * W
    with store.connect(settings.resolved_database_url) as conn:
        for batch, first in enumerate(range(0, n, 500)):
            lines = []
            for w in range(first, min(n, first + 500)):
                ws = start + w * W
                movies = rng.zipf(1.3, 400) % 10_000 + 1
                halves = rng.integers(1, 11, 400)
                cells: dict[tuple[int, int], int] = {}
                for m, h in zip(movies.tolist(), halves.tolist(), strict=True):
                    cells[(m, h)] = cells.get((m, h), 0) + 1
                lines += [
                    f"tumbling_1min,{ws},{ws + W},{m},{h},{c}\n" for (m, h), c in cells.items()
                ]
            store.commit_batch(
                conn,
                checkpoint="bench",
                topic="ratings",
                topic_id=None,
                batch_id=batch,
                cells_csv="".join(lines).encode(),
                invalid=0,
                batch_max_event_ms=None,
                allowed_lateness_ms=0,
                end_offsets={},
                primary_window_type="tumbling_1min",
            )


def load(url: str, rate: float, seconds: float, workers: int = 32) -> list[float]:
    """Open-loop load: request i is due at start + i/rate; latency counts from that instant."""
    local = threading.local()
    began = time.perf_counter() + 0.2

    def one(i: int) -> float:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=10)
        scheduled = began + i / rate
        time.sleep(max(0.0, scheduled - time.perf_counter()))
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"HTTP {response.status_code} from {url}: {response.text[:200]}")
        return time.perf_counter() - scheduled

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(int(rate * seconds))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results: dict[str, object] = {}
    with bench_stack("bench-api", 29192, 25532, CINESTREAM_API_PORT=str(port)):
        print(f"storing {args.windows:,} windows ...", flush=True)
        began = time.monotonic()
        store_windows(args.windows)
        print(f"stored in {time.monotonic() - began:.0f}s", flush=True)
        server = subprocess.Popen(
            [sys.executable, "-m", "cinestream.cli", "api"],
            env=os.environ.copy(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/metrics/health", timeout=1).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            for path in ("/metrics/summary", "/metrics/windows?limit=100"):
                load(base + path, 20, 2)  # warm the pool and the caches
                latencies = sorted(load(base + path, args.rate, args.seconds))
                results[path] = {
                    "requests": len(latencies),
                    "p50_ms": round(statistics.median(latencies) * 1000, 2),
                    "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
                    "max_ms": round(latencies[-1] * 1000, 2),
                }
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    print(
        json.dumps(
            {
                "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "windows": args.windows,
                "rate_per_s": args.rate,
                "seconds": args.seconds,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
