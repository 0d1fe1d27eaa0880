"""Freshness: how soon a rating produced now is counted by the API, at a steady rate.

    .venv/bin/python bench/bench_freshness.py [--rate 1000] [--interval 1s] [--seconds 150]

Starts its own Kafka and PostgreSQL (state in .state-bench-fresh, ports 29492/25632), the API
(port 28400) and a continuous processor with the given trigger interval, then produces RATE
ratings/s stamped with the wall clock for SECONDS (after a 30 s warm-up) while polling
``/metrics/windows`` every 50 ms. A rating counts as fresh once the API's total (the sum of the
windows' counts) reaches the number of ratings produced up to it: its freshness is that moment
minus the moment it was handed to the producer. One probe per RATE/4 ratings (four a second) gives
p50, p95, p99 and the worst. The processor's CPU time over the measurement (utime + stime of
its driver JVM and Python, from /proc) says what the interval costs.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from stack import bench_stack

API_PORT = 28400
os.environ.update(
    {
        "CINESTREAM_RATINGS_TOPIC": "fresh_ratings",
        "CINESTREAM_METRICS_TOPIC": "fresh_metrics",
        "CINESTREAM_DLQ_TOPIC": "fresh_dlq",
        "CINESTREAM_API_PORT": str(API_PORT),
    }
)


def cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and every process below it."""
    from cinestream.local.processes import descendants

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in {root, *descendants([root])}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class ApiTotals(threading.Thread):
    """Polls the API every 50 ms; keeps (time, total counted) whenever the total changes."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []
        self.totals: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    windows = client.get(self.url, params={"limit": 60}).json()
                    total = sum(w["count"] for w in windows)
                except (httpx.HTTPError, ValueError, TypeError):
                    total = None
                now = time.monotonic()
                if total is not None and (not self.totals or total > self.totals[-1]):
                    self.times.append(now)
                    self.totals.append(total)
                time.sleep(0.05)

    def first_time_at_least(self, count: int) -> float | None:
        i = bisect.bisect_left(self.totals, count)
        return self.times[i] if i < len(self.totals) else None


def produce_steady(rate: float, seconds: float, stamps: list[float]) -> None:
    """RATE ratings/s stamped now; ``stamps[k]`` is when rating k+1 was handed to the producer."""
    from confluent_kafka import Producer

    from cinestream.generator import LatentFactorModel, ModelParams, encode
    from cinestream.kafka.produce import producer_config
    from cinestream.settings import Settings

    settings = Settings()
    config = {**producer_config(settings.kafka_client_config), "linger.ms": 5}
    producer = Producer(config)
    model = LatentFactorModel(ModelParams(seed=11))
    tick = 0.01
    per_tick = rate * tick
    began = time.monotonic()
    sent = 0.0
    while time.monotonic() - began < seconds:
        due = int((time.monotonic() - began) * rate) - int(sent)
        if due > 0:
            users, movies, ratings = model.sample(due)
            now_ms = int(time.time() * 1000)
            times = np.full(due, now_ms, dtype=np.int64)
            for key, value, ts in encode(users, movies, ratings, times):
                producer.produce(settings.ratings_topic, value, key, timestamp=ts)
                stamps.append(time.monotonic())
            sent += due
        producer.poll(0)
        time.sleep(max(0.0, tick - 0.002) if per_tick < 1 else tick)
    assert producer.flush(30) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--interval", default="1s", help="the processor's trigger interval")
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--warmup", type=float, default=30)
    args = parser.parse_args()

    with bench_stack("bench-fresh", 29492, 25632, CINESTREAM_TRIGGER_INTERVAL=args.interval):
        from cinestream.settings import Settings

        settings = Settings()
        logs = settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "cinestream.cli"]
        api = subprocess.Popen(
            [*cli, "api"], stdout=open(logs / "api.log", "wb"), stderr=subprocess.STDOUT
        )
        processor = subprocess.Popen(
            [*cli, "process", "--trigger", "continuous", "--interval", args.interval],
            stdout=open(logs / "processor.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while " started (run id " not in (logs / "processor.log").read_text():
                if processor.poll() is not None or time.monotonic() > deadline:
                    sys.exit((logs / "processor.log").read_text()[-3000:])
                time.sleep(0.5)
            poller = ApiTotals(f"{settings.api_url}/metrics/windows")
            poller.start()
            print(f"warm-up: {args.warmup:.0f}s at {args.rate:.0f} ratings/s ...")
            warm: list[float] = []
            produce_steady(args.rate, args.warmup, warm)
            offset = len(warm)
            while poller.first_time_at_least(offset) is None:
                time.sleep(0.1)
            print(f"measuring: {args.seconds:.0f}s, trigger interval {args.interval} ...")
            cpu_before = cpu_seconds(processor.pid)
            stamps: list[float] = []
            produce_steady(args.rate, args.seconds, stamps)
            cpu = cpu_seconds(processor.pid) - cpu_before
            deadline = time.monotonic() + 60
            while poller.first_time_at_least(offset + len(stamps)) is None:
                assert time.monotonic() < deadline, "the API never counted every rating"
                time.sleep(0.1)
            poller.stop.set()
        finally:
            processor.terminate()
            processor.wait(timeout=120)
            api.terminate()
            api.wait(timeout=30)

    step = max(1, int(args.rate / 4))
    delays = []
    for k in range(step, len(stamps) + 1, step):
        seen = poller.first_time_at_least(offset + k)
        assert seen is not None
        delays.append(seen - stamps[k - 1])
    delays.sort()

    def pct(p: float) -> float:
        return delays[min(len(delays) - 1, max(0, int(-(-p * len(delays) // 1)) - 1))]

    result = {
        "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "rate_per_s": args.rate,
        "trigger_interval": args.interval,
        "ratings": len(stamps),
        "probes": len(delays),
        "p50_s": round(pct(0.50), 3),
        "p95_s": round(pct(0.95), 3),
        "p99_s": round(pct(0.99), 3),
        "max_s": round(delays[-1], 3),
        "mean_s": round(statistics.fmean(delays), 3),
        "processor_cpu_share_of_one_core": round(cpu / args.seconds, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
