"""Latency of /metrics/summary and /metrics/windows at a fixed request rate.

    .venv/bin/python bench/bench_api.py [--windows 10000] [--rate 200] [--seconds 20]
                                        [--commit-every 10] [--beside-stack]

Stores WINDOWS one-minute windows through the pipeline's own commit code (about 150 movies per
window), serves the API with uvicorn on its own port, and sends requests open-loop at RATE per
second (latency counted from the scheduled send time, so a slow server cannot hide queueing) while
a writer commits one more window every COMMIT_EVERY seconds, as the stream processor does per
micro-batch: each commit invalidates the API's cached answers, so the numbers include the
recomputations. ``after_commit_median_ms`` is a single request right after a commit (a cache miss).

``--beside-stack`` (a commit every second unless --commit-every says otherwise) measures the same
while the default stack (``make up``: its state dir's pid files, read only) runs beside it, and
reports what ran beside: its live components, the CPU (cores) its stream processor and the whole
stack used during each load, and the same load sent to the default stack's own API (its commits
are its processor's). When no default stack is running it says so and measures without one.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np
from peer_args import OneLineParser, positive_int
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
        # The statistics autovacuum keeps on a store that grew over days, not minutes: without
        # them the planner takes a day of per-movie rows for a handful and sorts them on disk.
        self.conn.execute("ANALYZE")
        self._stop = threading.Event()

    def commit(self, n: int) -> None:
        """Commit the next ``n`` one-minute windows of 400 ratings each as one micro-batch."""
        from cinestream.store.commit import BatchCommit, commit_batch
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


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _cpu_seconds(pids: set[int]) -> float:
    """utime + stime of ``pids`` (those still alive), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


class DefaultStack:
    """The default stack (``make up``) as found from its pid files, read only: its live
    components and the process trees below them."""

    def __init__(self, run_dir: Path, api_url: str, roots: dict[str, int]) -> None:
        self.run_dir = run_dir
        self.api_url = api_url
        self.roots = roots

    @classmethod
    def find(cls) -> DefaultStack | None:
        """The running default stack, or None (no live pid in its run dir)."""
        from cinestream.local.processes import pid_alive
        from cinestream.settings import Settings

        settings = Settings()  # the environment as `make up` sees it; nothing is written
        roots = {}
        for pid_file in sorted(settings.run_dir.glob("*.pid")):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                roots[pid_file.stem] = pid
        return cls(settings.run_dir, settings.api_url, roots) if roots else None

    def pids(self) -> tuple[set[int], set[int]]:
        """(every process of the stack, those of its stream processor)."""
        from cinestream.local.processes import descendants

        everything = set(self.roots.values()) | descendants(list(self.roots.values()))
        processor_roots = [p for p in everything if "ratings_stream_processor" in _cmdline(p)]
        processor = set(processor_roots) | descendants(processor_roots)
        return everything, processor

    def cpu_during(self, run: Callable[[], object]) -> tuple[object, dict[str, object]]:
        """``run()``'s result and the cores the stack and its processor used meanwhile."""
        everything, processor = self.pids()
        before = (_cpu_seconds(everything), _cpu_seconds(processor))
        began = time.monotonic()
        result = run()
        elapsed = time.monotonic() - began
        after = (_cpu_seconds(everything), _cpu_seconds(processor))
        return result, {
            "stack_cores": round((after[0] - before[0]) / elapsed, 2),
            "processor_cores": round((after[1] - before[1]) / elapsed, 2),
            "processor_running": bool(processor),
        }


def _summary(latencies: list[float]) -> dict[str, object]:
    latencies = sorted(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=positive_int, default=10_000)
    parser.add_argument("--rate", type=positive_float, default=200)
    parser.add_argument("--seconds", type=positive_float, default=20)
    parser.add_argument(
        "--commit-every",
        type=non_negative_float,
        default=None,
        help="seconds between micro-batch commits during the load (0: none); default 10 (1 with "
        "--beside-stack, the processor's default trigger interval)",
    )
    parser.add_argument(
        "--beside-stack",
        action="store_true",
        help="run beside the default stack (make up) and report what it used, and the same load "
        "on its own API",
    )
    args = parser.parse_args()
    if args.commit_every is None:
        args.commit_every = 1.0 if args.beside_stack else 10.0
    beside = DefaultStack.find() if args.beside_stack else None
    beside_report: dict[str, object] | str | None = None
    if args.beside_stack and beside is None:
        beside_report = "no default stack is running: measured beside nothing of it"
        print(f"--beside-stack: {beside_report}", flush=True)
    elif beside is not None:
        print(
            f"--beside-stack: the default stack runs ({', '.join(sorted(beside.roots))}; "
            f"pid files in {beside.run_dir})",
            flush=True,
        )
        beside_report = {"components": sorted(beside.roots), "during_load": {}}
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
                    if beside is not None:
                        loaded, used = beside.cpu_during(
                            lambda url=base + path: load(url, args.rate, args.seconds)
                        )
                        latencies = sorted(loaded)  # type: ignore[call-overload]
                        assert isinstance(beside_report, dict)
                        beside_report["during_load"][path] = used  # type: ignore[index]
                    else:
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
    if beside is not None:
        assert isinstance(beside_report, dict)
        beside_report["its_own_api"] = live_api(beside, args.rate, args.seconds)
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
                **({"beside_stack": beside_report} if args.beside_stack else {}),
            },
            indent=2,
        )
    )


def live_api(stack: DefaultStack, rate: float, seconds: float) -> dict[str, object]:
    """The same open-loop load on the default stack's own API (its data, its processor's
    commits), with the cores its processor used meanwhile; or why it could not be loaded."""
    report: dict[str, object] = {"url": stack.api_url}
    for path in ("/metrics/summary", "/metrics/windows?limit=100"):
        try:
            _get_ms(stack.api_url + path)
        except OSError as exc:
            report[path] = f"not answering: {exc}"
            continue
        load(stack.api_url + path, 20, 2)  # warm the pool
        loaded, used = stack.cpu_during(lambda url=stack.api_url + path: load(url, rate, seconds))
        report[path] = {**_summary(loaded), **used}  # type: ignore[arg-type]
        print(f"default stack's API {path}: {report[path]}", flush=True)
    return report


if __name__ == "__main__":
    main()
