"""Drain rate of the cluster profile next to the single-node stack, in one run.

    .venv/bin/python bench/bench_cluster_drain.py [--count 500000]

First a private single-node stack (one PLAINTEXT broker, Spark local[2]; state .state-bench-single,
ports 29092/25432), then a private cluster-profile stack (three SASL/SCRAM brokers with
replication 3 and min.insync.replicas 2, a Spark standalone master with two one-core workers;
state .state-bench-cluster, ports 29192-29194/25532, master 27177). On each: the same COUNT
ratings produced (acks=all), then drained by one available-now run of the processor; on the
cluster once with the profile's one core per job and once with both workers. Prints the rates and
a JSON summary (date, machine). Exactness is checked on every drain (window_metrics total).
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
from typing import Any

from stack import bench_stack

os.environ.update(
    {
        "CINESTREAM_RATINGS_TOPIC": "bench_ratings",
        "CINESTREAM_METRICS_TOPIC": "bench_metrics",
        "CINESTREAM_DLQ_TOPIC": "bench_dlq",
    }
)


def produce(count: int, span_min: int) -> float:
    """COUNT ratings into the stack's ratings topic; returns the producer's rate."""
    from cinestream.generator import ModelParams, generate
    from cinestream.settings import Settings

    settings = Settings()
    span_ms = span_min * 60_000
    report = generate(
        kafka=settings.kafka_client_config,
        topic=settings.ratings_topic,
        params=ModelParams(),
        count=count,
        start_ms=int(time.time() * 1000) - span_ms - 3_600_000,
        span_ms=span_ms,
        progress=False,
    )
    assert report.failed == 0 and report.delivered == count, report.as_dict()
    return report.rate


def drain(count: int, label: str, **env: str) -> dict[str, Any]:
    """One available-now run over the whole topic from an empty checkpoint and empty tables."""
    from cinestream.settings import Settings
    from cinestream.store import reads, schema
    from cinestream.store.connection import connect
    from cinestream.stream.checkpoint import delete_checkpoint
    from cinestream.stream.submit import spark_env, spark_submit_command

    os.environ.update(env)
    settings = Settings()
    delete_checkpoint(settings.checkpoint_dir)
    with connect(settings.resolved_database_url) as conn:
        schema.truncate_all(conn)
    cmd = spark_submit_command(
        settings, "ratings_stream_processor.py", ["--trigger", "available-now"]
    )
    began = time.monotonic()
    result = subprocess.run(cmd, env=spark_env(), capture_output=True, text=True)
    wall = time.monotonic() - began
    out = result.stdout + result.stderr
    match = re.search(r"processor finished: (\d+) batches, (\d+) valid.* in ([\d.]+)s", out)
    if result.returncode or not match:
        sys.exit(f"{label}: the processor failed:\n{out[-3000:]}")
    with connect(settings.resolved_database_url) as conn:
        counted = reads.window_totals(conn, "tumbling_1min").ratings
    assert int(match[2]) == count and counted == count, (match[2], counted, count)
    drain_s = float(match[3])
    print(
        f"{label}: {count:,} ratings in {drain_s:.1f}s after the JVM was up "
        f"({count / drain_s:,.0f}/s), {wall:.1f}s wall, {match[1]} batches"
    )
    return {
        "master": settings.spark_master,
        "cores_max": settings.spark_cores_max or "all",
        "batches": int(match[1]),
        "drain_s": round(drain_s, 2),
        "rate_per_s": round(count / drain_s),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--span-min", type=int, default=60)
    args = parser.parse_args()
    results: dict[str, Any] = {}

    with bench_stack("bench-single", 29092, 25432):
        rate = produce(args.count, args.span_min)
        print(f"single: produced {args.count:,} at {rate:,.0f}/s (1 broker, PLAINTEXT)")
        results["single"] = {"produce_rate_per_s": round(rate), **drain(args.count, "single")}

    with bench_stack(
        "bench-cluster",
        29192,
        25532,
        profile="cluster",
        CINESTREAM_SPARK_MASTER="spark://127.0.0.1:27177",
    ):
        rate = produce(args.count, args.span_min)
        print(f"cluster: produced {args.count:,} at {rate:,.0f}/s (3 brokers, SASL, acks=all)")
        results["cluster_one_core"] = {
            "produce_rate_per_s": round(rate),
            **drain(args.count, "cluster, 1 core per job"),
        }
        results["cluster_two_workers"] = drain(
            args.count, "cluster, both workers", CINESTREAM_SPARK_CORES_MAX="2"
        )

    summary = {
        "date": datetime.now(tz=UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "ratings": args.count,
        **results,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
