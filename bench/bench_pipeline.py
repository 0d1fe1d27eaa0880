"""Throughput of the generator and of the stream processor on this machine, in one run.

    .venv/bin/python bench/bench_pipeline.py [--count 1000000]

Starts its own Kafka and PostgreSQL (state in .state-bench, ports 29092/25432), fills a topic with
COUNT ratings, and reports:
  * the generator's rate next to a raw confluent-kafka producer sending the same payloads;
  * the processor's drain rate (available-now over the whole topic, JVM start excluded), its time
    per phase summed over the batches (spark: read + parse + aggregate + cells to the driver;
    dlq; handoff: the cells into the COPY format; store: the PostgreSQL commit; publish: the
    metrics topic) and the peak resident memory of its driver (JVM, Python);
  * next to it the ceiling: Spark's own batch pass over the same topic with the same parse and
    aggregation, counted (warm), and the drain as a share of it; and the same pass as the first
    job of a fresh JVM (cold), which is what a drain's first batch is;
  * the drain by a processor already running (continuous, 1 s trigger, its JVM warmed by 100,000
    ratings): COUNT more ratings produced while it runs, from the first produced to the last
    counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from stack import bench_stack

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".state-bench"
# Set before cinestream is imported: the settings are read from the environment.
os.environ.update(
    {
        "CINESTREAM_RATINGS_TOPIC": "bench_ratings",
        "CINESTREAM_METRICS_TOPIC": "bench_metrics",
        "CINESTREAM_DLQ_TOPIC": "bench_dlq",
    }
)

from cinestream.generator import (  # noqa: E402
    DeliveryReport,
    LatentFactorModel,
    ModelParams,
    encode,
    event_times,
    generate,
)
from cinestream.kafka import admin as kafka_admin  # noqa: E402
from cinestream.kafka.produce import producer_config  # noqa: E402
from cinestream.settings import Settings  # noqa: E402
from cinestream.store import reads  # noqa: E402
from cinestream.store.connection import connect  # noqa: E402
from cinestream.stream.stop_files import request_stop  # noqa: E402
from cinestream.stream.submit import spark_env, spark_submit_command  # noqa: E402


def raw_producer_rate(settings: Settings, count: int, start_ms: int, span_ms: int) -> float:
    """confluent-kafka with the same config and pre-encoded payloads: the producer's ceiling."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    admin = kafka_admin.admin_client(settings)
    admin.create_topics([NewTopic("bench_raw", 3, 1)])["bench_raw"].result()
    model = LatentFactorModel(ModelParams(seed=99))
    users, movies, ratings = model.sample(count)
    payloads = list(encode(users, movies, ratings, event_times(start_ms, span_ms, 0, count, count)))
    producer = Producer(producer_config(settings.kafka_client_config))
    began = time.monotonic()
    for key, value, ts in payloads:
        while True:
            try:
                producer.produce("bench_raw", value, key, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.05)
    producer.poll(0)
    assert producer.flush(120) == 0
    return count / (time.monotonic() - began)


def _tree_rss(root: int) -> dict[str, int]:
    """Resident memory (bytes) of ``root``'s process tree, split into the driver's JVM and its
    Python processes."""
    from cinestream.local.processes import descendants

    rss = {"jvm": 0, "python": 0}
    for pid in {root, *descendants([root])}:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if match:
            rss["jvm" if name == "java" else "python"] += int(match[1]) * 1024
    return rss


def spark_run(
    settings: Settings, script: str, args: list[str]
) -> tuple[str, dict[str, int], float]:
    """Run a job through spark-submit; its output, the peak resident memory of its driver (JVM,
    Python) sampled every 0.2 s, and its wall time."""
    cmd = spark_submit_command(settings, script, args)
    if script.startswith("../bench/"):
        cmd[-1 - len(args)] = str(REPO / "bench" / Path(script).name)
    log_path = STATE / f"{Path(script).stem}.log"
    peak = {"jvm": 0, "python": 0}
    began = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=spark_env(), stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            for part, value in _tree_rss(proc.pid).items():
                peak[part] = max(peak[part], value)
            time.sleep(0.2)
    wall = time.monotonic() - began
    output = log_path.read_text()
    if proc.returncode:
        sys.exit(f"{script} failed:\n{output[-3000:]}")
    return output, peak, wall


PHASE = re.compile(r"(spark|dlq|handoff|wait|store|publish) ([\d.]+)s")


def phase_totals(batch_lines: list[str]) -> dict[str, float]:
    """Seconds per phase summed over the processor's batch lines."""
    totals: dict[str, float] = {}
    for line in batch_lines:
        for name, seconds in PHASE.findall(line.split("(", 1)[-1]):
            totals[name] = totals.get(name, 0.0) + float(seconds)
    return {k: round(v, 2) for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--span-min", type=int, default=100, help="event-time span of the backlog")
    args = parser.parse_args()

    with bench_stack("bench", 29092, 25432):
        settings = Settings()
        span_ms = args.span_min * 60_000
        start_ms = int(time.time() * 1000) - span_ms - 3_600_000
        print(f"generating {args.count:,} ratings over {args.span_min} min of event time ...")
        report = _produce(settings, args.count, start_ms, span_ms, ModelParams())
        raw_rate = raw_producer_rate(settings, args.count, start_ms, span_ms)

        print("ceiling: Spark's batch parse + aggregate over the topic, counted (warm) ...")
        ceiling = _last_json(
            spark_run(settings, "../bench/spark_ceiling.py", [str(STATE / "ceiling-checkpoint")])[0]
        )
        print("processor: available-now over the whole topic ...")
        out, peak, wall = spark_run(
            settings, "ratings_stream_processor.py", ["--trigger", "available-now"]
        )
        match = re.search(r"processor finished: (\d+) batches, (\d+) valid.* in ([\d.]+)s", out)
        if not match:
            sys.exit(f"could not read the processor's summary:\n{out[-3000:]}")
        batches, valid, drain_s = int(match[1]), int(match[2]), float(match[3])
        assert valid == args.count, (valid, args.count)
        counted = _counted(settings)
        assert counted == args.count, counted
        batch_lines = [line for line in out.splitlines() if "cinestream.processor: batch" in line]
        print("processor again: nothing new (the start-up cost) ...")
        empty_out, _, empty_wall = spark_run(
            settings, "ratings_stream_processor.py", ["--trigger", "available-now"]
        )
        assert "lag 0" in empty_out, empty_out[-2000:]
        print(
            "processor, warm: a running continuous processor, the same backlog produced again ..."
        )
        warm = warm_drain(settings, args.count, start_ms + span_ms)

    drain_rate = args.count / drain_s
    ceiling_rate = ceiling["ceiling_records"] / ceiling["ceiling_seconds"]
    cold_rate = ceiling["ceiling_records"] / ceiling["cold_seconds"]
    result = {
        "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "ratings": args.count,
        "generator_rate_per_s": round(report.rate),
        "raw_producer_rate_per_s": round(raw_rate),
        "generator_vs_raw": round(report.rate / raw_rate, 2),
        "processor_batches": batches,
        "processor_drain_s": round(drain_s, 2),
        "processor_drain_rate_per_s": round(drain_rate),
        "processor_wall_s": round(wall, 2),
        "empty_run_wall_s": round(empty_wall, 2),
        "drain_rate_net_of_startup_per_s": round(args.count / (wall - empty_wall)),
        "ceiling_s": round(ceiling["ceiling_seconds"], 2),
        "ceiling_rate_per_s": round(ceiling_rate),
        "drain_vs_ceiling": round(args.count / (wall - empty_wall) / ceiling_rate, 2),
        # The same pass as the JVM's first job (what the drain's first batch is): JIT and class
        # loading included, the session's start not.
        "ceiling_cold_s": round(ceiling["cold_seconds"], 2),
        "ceiling_cold_rate_per_s": round(cold_rate),
        "drain_vs_cold_ceiling": round(args.count / (wall - empty_wall) / cold_rate, 2),
        "drain_phases_s": phase_totals(batch_lines),
        **warm,
        "driver_peak_rss_mib": {k: round(v / 2**20) for k, v in peak.items()},
    }
    print("\n".join(line.split("cinestream.processor: ")[-1] for line in batch_lines))
    print(json.dumps(result, indent=2))


WARM_UP = 100_000


def warm_drain(settings: Settings, count: int, start_ms: int) -> dict[str, float | int]:
    """The drain by a processor whose JVM is already warm (as the live platform's is): a
    continuous processor (1 s trigger) drains WARM_UP ratings, then ``count`` more are produced
    while it runs; the time from the first of them produced to the last counted. Event times
    follow the earlier backlog's, so nothing is late."""
    cmd = spark_submit_command(
        settings,
        "ratings_stream_processor.py",
        ["--trigger", "continuous", "--interval", "1s"],
    )
    log_path = STATE / "warm_processor.log"
    already = _counted(settings)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=spark_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            _produce(settings, WARM_UP, start_ms, 5 * 60_000)
            _wait_counted(settings, already + WARM_UP, proc)
            began = time.monotonic()
            _produce(settings, count, start_ms + 5 * 60_000, 50 * 60_000)
            produced_s = time.monotonic() - began
            _wait_counted(settings, already + WARM_UP + count, proc)
            drain_s = time.monotonic() - began
        finally:
            request_stop(settings)
            proc.wait(300)
    lines = [
        line for line in log_path.read_text().splitlines() if "cinestream.processor: batch" in line
    ]
    return {
        "warm_produce_s": round(produced_s, 2),
        "warm_drain_s": round(drain_s, 2),
        "warm_drain_rate_per_s": round(count / drain_s),
        "warm_batches": len(lines),
    }


def _produce(
    settings: Settings, count: int, start_ms: int, span_ms: int, params: ModelParams | None = None
) -> DeliveryReport:
    """Produce ``count`` ratings over ``[start_ms, start_ms + span_ms)`` (a model seeded by the
    count unless ``params`` are given); fail on any undelivered one."""
    report = generate(
        kafka=settings.kafka_client_config,
        topic=settings.ratings_topic,
        params=params or ModelParams(seed=count),
        count=count,
        start_ms=start_ms,
        span_ms=span_ms,
        progress=False,
    )
    assert report.failed == 0, report.as_dict()
    return report


def _counted(settings: Settings) -> int:
    with connect(settings.resolved_database_url) as conn:
        return reads.window_totals(conn, "tumbling_1min").ratings


def _wait_counted(settings: Settings, expected: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while (counted := _counted(settings)) != expected:
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"warm processor: {counted} counted, {expected} expected")
        time.sleep(0.1)


def _last_json(output: str) -> dict:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON result in:\n{output[-2000:]}")


if __name__ == "__main__":
    main()
