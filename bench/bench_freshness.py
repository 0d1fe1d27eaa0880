"""Freshness: how soon a rating produced now is counted by the API, at a steady rate.

    .venv/bin/python bench/bench_freshness.py [--rates 20,1000] [--interval 1s] [--seconds 150]

Starts its own Kafka and PostgreSQL (state in .state-bench-fresh, ports 29492/25632), the API
(port 28400) and a continuous processor with the given trigger interval, then produces RATE
ratings/s stamped with the wall clock for SECONDS (after a 30 s warm-up) while polling
``/metrics/windows`` every 50 ms. A rating counts as fresh once the API's total (the sum of the
windows' counts) reaches the number of ratings produced up to it: its freshness is that moment
minus the moment it was handed to the producer. One probe per RATE/4 ratings (four a second) gives
p50, p95, p99 and the worst. The processor's CPU over the measurement (utime + stime from /proc,
in cores: its driver JVM and its Python processes, and their sum) says what the interval costs.
Several rates (``--rates 20,1000``, the default: the live generator's and a busy one) are measured
one after the other on the same processor, each after its own warm-up, and printed side by side.
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
from peer_args import OneLineParser
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


def cpu_seconds(root: int) -> dict[str, float]:
    """utime + stime of ``root`` and every process below it: the JVM's (``java``) and the rest's
    (the CLI, the driver's Python and its workers)."""
    from cinestream.local.processes import descendants

    ticks = os.sysconf("SC_CLK_TCK")
    total = {"jvm": 0, "python": 0}
    for pid in {root, *descendants([root])}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        total["jvm" if name == "java" else "python"] += int(fields[11]) + int(fields[12])
    return {part: ticks_ / ticks for part, ticks_ in total.items()}


def rates(text: str) -> list[float]:
    """A comma-separated list of rates > 0."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 20,1000, got {text!r}") from None
    if not values or any(not 0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"every rate must be > 0, got {text!r}")
    return values


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


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
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=rates, default=None, help="ratings/s, one after the other (20,1000)"
    )
    parser.add_argument("--rate", type=positive_float, default=None, help="one rate only")
    parser.add_argument("--interval", default="1s", help="the processor's trigger interval")
    parser.add_argument("--seconds", type=positive_float, default=150)
    parser.add_argument("--warmup", type=positive_float, default=30)
    args = parser.parse_args()
    if args.rate is not None and args.rates is not None:
        parser.error("give --rate or --rates, not both")
    measured_rates = [args.rate] if args.rate is not None else (args.rates or [20.0, 1000.0])

    results = []
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
            produced = 0
            for rate in measured_rates:
                print(f"warm-up: {args.warmup:.0f}s at {rate:.0f} ratings/s ...", flush=True)
                warm: list[float] = []
                produce_steady(rate, args.warmup, warm)
                produced += len(warm)
                deadline = time.monotonic() + 120
                while poller.first_time_at_least(produced) is None:
                    assert time.monotonic() < deadline, "the API never caught up after warm-up"
                    time.sleep(0.1)
                print(
                    f"measuring: {args.seconds:.0f}s at {rate:.0f} ratings/s, trigger interval "
                    f"{args.interval} ...",
                    flush=True,
                )
                cpu_before = cpu_seconds(processor.pid)
                began = time.monotonic()
                stamps: list[float] = []
                produce_steady(rate, args.seconds, stamps)
                elapsed = time.monotonic() - began
                cpu_after = cpu_seconds(processor.pid)
                cores = {k: (cpu_after[k] - cpu_before[k]) / elapsed for k in cpu_after}
                deadline = time.monotonic() + 60
                while poller.first_time_at_least(produced + len(stamps)) is None:
                    assert time.monotonic() < deadline, "the API never counted every rating"
                    time.sleep(0.1)
                results.append(summarize(rate, args.interval, poller, produced, stamps, cores))
                produced += len(stamps)
                print(json.dumps(results[-1]), flush=True)
            poller.stop.set()
        finally:
            processor.terminate()
            processor.wait(timeout=120)
            api.terminate()
            api.wait(timeout=30)

    print()
    print("| rate | trigger | probes | p50 | p95 | p99 | worst | processor cores (JVM + Python) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['rate_per_s']:,.0f}/s | {r['trigger_interval']} | {r['probes']} "
            f"| {r['p50_s']:.2f} s | {r['p95_s']:.2f} s | {r['p99_s']:.2f} s | {r['max_s']:.2f} s "
            f"| {r['processor_cores']:.2f} ({r['processor_jvm_cores']:.2f} + "
            f"{r['processor_python_cores']:.2f}) |"
        )
    print(
        json.dumps(
            {
                "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "results": results,
            },
            indent=2,
        )
    )


def summarize(
    rate: float,
    interval: str,
    poller: ApiTotals,
    offset: int,
    stamps: list[float],
    cores: dict[str, float],
) -> dict:
    """Freshness percentiles of one rate's probes (four a second) and the processor's cores."""
    step = max(1, int(rate / 4))
    delays = []
    for k in range(step, len(stamps) + 1, step):
        seen = poller.first_time_at_least(offset + k)
        assert seen is not None
        delays.append(seen - stamps[k - 1])
    delays.sort()

    def pct(p: float) -> float:
        return delays[min(len(delays) - 1, max(0, int(-(-p * len(delays) // 1)) - 1))]

    return {
        "rate_per_s": rate,
        "trigger_interval": interval,
        "ratings": len(stamps),
        "probes": len(delays),
        "p50_s": round(pct(0.50), 3),
        "p95_s": round(pct(0.95), 3),
        "p99_s": round(pct(0.99), 3),
        "max_s": round(delays[-1], 3),
        "mean_s": round(statistics.fmean(delays), 3),
        # Cores over the measurement (1.0: one core busy the whole time), from /proc.
        "processor_cores": round(cores["jvm"] + cores["python"], 2),
        "processor_jvm_cores": round(cores["jvm"], 2),
        "processor_python_cores": round(cores["python"], 2),
        # The name the README's table used: the same number.
        "processor_cpu_share_of_one_core": round(cores["jvm"] + cores["python"], 2),
    }


if __name__ == "__main__":
    main()
