"""cinestream's drain side by side with its two peers, on the same topic, as whole cold processes.

    .venv/bin/python bench/bench_side_by_side.py [--count 1000000] [--rounds 2] [--span-min 100]

Starts its own Kafka and PostgreSQL (state in .state-bench-peers, ports 29792/25932), fills a
topic of 3 partitions with COUNT ratings from the generator (event times over SPAN_MIN minutes
ending an hour ago) and keeps a second topic of 3 partitions empty. Then, ROUNDS times, each of
the three runs once on the empty topic and once on the full one, interleaved (each round starts
with the next of them), every run a whole cold process:

  * cinestream: ``cinestream process --trigger available-now`` from an empty checkpoint and an
    empty store (exact p50/p95 and top-10, DLQ, PostgreSQL, the metrics topic);
  * naive Spark: ``bench/bench_peer_spark.py`` (built-in ``window`` + ``percentile_approx``,
    update mode, Kafka sink, available-now; one spark-submit);
  * Flink SQL: ``bench/bench_peer_flink.py`` (batch over the bounded topic: count, avg, half-star
    histogram with exact p50/p95, exact top-10 by ROW_NUMBER, blackhole sinks; its own venv).

Each run is checked: its windows must count exactly the ratings produced (0 on the empty topic),
or the bench stops. Start-up is netted out: net rate = COUNT / (best full wall - best empty wall),
best over the rounds. Prints the side-by-side table with the ratios cinestream / naive Spark and
cinestream / Flink SQL and writes it all to .state-bench-peers/side_by_side.json. The machine's
load average is recorded before and after: on a shared machine the numbers are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import bench_peer_flink
import bench_peer_spark
from peer_args import OneLineParser, positive_int
from stack import bench_stack

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT, PG_PORT = 29792, 25932
FULL_TOPIC, EMPTY_TOPIC = "peers_ratings", "peers_empty"
# Set before cinestream is imported: the settings are read from the environment.
os.environ.update(
    {
        "CINESTREAM_RATINGS_TOPIC": FULL_TOPIC,
        "CINESTREAM_METRICS_TOPIC": "peers_metrics",
        "CINESTREAM_DLQ_TOPIC": "peers_dlq",
    }
)

SYSTEMS = ("cinestream", "naive-spark", "flink-sql")


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_cinestream(state: Path, topic: str, expect: int) -> float:
    """``cinestream process --trigger available-now`` over ``topic`` as one cold process, from an
    empty checkpoint and store (reset first, not timed); its wall time. Fails unless the store
    counts ``expect`` ratings afterwards."""
    from cinestream.local import stack
    from cinestream.settings import Settings
    from cinestream.store import reads
    from cinestream.store.connection import connect

    settings = Settings(ratings_topic=topic)
    for _ in stack.reset(settings, keep_topics=True):
        pass
    log = state / f"cinestream_{topic}.log"
    env = {**os.environ, "CINESTREAM_RATINGS_TOPIC": topic}
    cmd = [sys.executable, "-m", "cinestream.cli", "process", "--trigger", "available-now"]
    began = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - began
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        sys.exit(f"cinestream process failed (exit {code}); see {log}:\n{tail}")
    with connect(settings.resolved_database_url) as conn:
        counted = reads.window_totals(conn, "tumbling_1min").ratings
    if counted != expect:
        sys.exit(f"cinestream counted {counted:,} ratings in {topic}, {expect:,} were produced")
    return wall


def produce(count: int, span_min: int) -> dict:
    """COUNT ratings into the full topic (event times over SPAN_MIN minutes ending an hour ago),
    and the empty topic created; the generator's report."""
    from confluent_kafka.admin import NewTopic

    from cinestream.generator import ModelParams, generate
    from cinestream.kafka import admin
    from cinestream.settings import Settings

    settings = Settings()
    client = admin.admin_client(settings)
    client.create_topics([NewTopic(EMPTY_TOPIC, settings.ratings_partitions, 1)])[
        EMPTY_TOPIC
    ].result()
    span_ms = span_min * 60_000
    start_ms = int(time.time() * 1000) - span_ms - 3_600_000
    report = generate(
        kafka=settings.kafka_client_config,
        topic=settings.ratings_topic,
        params=ModelParams(),
        count=count,
        start_ms=start_ms,
        span_ms=span_ms,
        progress=False,
    )
    if report.failed or report.delivered != count:
        sys.exit(f"the generator delivered {report.delivered:,} of {count:,}: {report.as_dict()}")
    return report.as_dict()


def best_net(walls: dict[str, list[float]], count: int) -> dict:
    """Best (smallest) wall time on each topic over the rounds and the net rate they give."""
    empty, full = min(walls["empty"]), min(walls["full"])
    net = full - empty
    return {
        "empty_walls_s": [round(w, 2) for w in walls["empty"]],
        "full_walls_s": [round(w, 2) for w in walls["full"]],
        "best_empty_s": round(empty, 2),
        "best_full_s": round(full, 2),
        "net_s": round(net, 2),
        # A net time at or below zero: start-up noise larger than the work (a tiny COUNT).
        "net_rate_per_s": round(count / net) if net > 0 else None,
        "per_round_net_rate_per_s": [
            round(count / (f - e)) if f > e else None
            for e, f in zip(walls["empty"], walls["full"], strict=True)
        ],
    }


def ratio(a: int | None, b: int | None) -> float | None:
    return round(a / b, 2) if a and b else None


def table(result: dict) -> str:
    count = result["ratings"]
    rows = [
        (
            "`cinestream process --trigger available-now` (exact p50/p95/top-10, DLQ, "
            "PostgreSQL, metrics topic)",
            result["cinestream"],
        ),
        (
            "naive Spark: built-in window + percentile_approx, update mode, Kafka sink, "
            "one spark-submit",
            result["naive-spark"],
        ),
        (
            "Flink SQL 2.2 batch: count, avg, histogram (exact p50/p95), exact top-10, blackhole",
            result["flink-sql"],
        ),
    ]

    def rate(value: int | None) -> str:
        return f"{value:,}/s" if value else "n/a"

    lines = [
        f"| whole cold process, same topic | empty topic (best of {result['rounds']}) "
        f"| {count:,} ratings (best) | net rate | net rate per round |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in rows:
        per_round = " / ".join(rate(x) for x in r["per_round_net_rate_per_s"])
        lines.append(
            f"| {name} | {r['best_empty_s']:.1f} s | {r['best_full_s']:.1f} s "
            f"| **{rate(r['net_rate_per_s'])}** | {per_round} |"
        )
    lines.append("")
    for peer in ("naive-spark", "flink-sql"):
        value = result[f"cinestream_vs_{peer}"]
        lines.append(
            f"cinestream / {peer}: {value if value is not None else 'n/a'} (net rates)"
            + "".join(
                f"; round {i + 1}: {x if x is not None else 'n/a'}"
                for i, x in enumerate(result[f"cinestream_vs_{peer}_per_round"])
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=positive_int, default=1_000_000, help="ratings")
    parser.add_argument(
        "--rounds", type=positive_int, default=2, help="interleaved rounds; the best counts"
    )
    parser.add_argument(
        "--span-min", type=positive_int, default=100, help="event-time span of the ratings"
    )
    args = parser.parse_args()

    bench_peer_flink.ensure_flink()  # the Flink venv and connector once, before any clock runs
    began = datetime.now(tz=UTC)
    load_before = load_average()
    bootstrap = f"127.0.0.1:{KAFKA_PORT}"
    walls: dict[str, dict[str, list[float]]] = {s: {"empty": [], "full": []} for s in SYSTEMS}
    with bench_stack("bench-peers", KAFKA_PORT, PG_PORT) as state:
        print(f"generating {args.count:,} ratings over {args.span_min} min of event time ...")
        generator = produce(args.count, args.span_min)
        runners: dict[str, Callable[[str, int, str], float]] = {
            "cinestream": lambda topic, expect, _tag: run_cinestream(state, topic, expect),
            "naive-spark": lambda topic, expect, tag: bench_peer_spark.run(
                bootstrap, topic, f"peer_spark_out_{tag}", state / "spark-peer", expect
            )["wall_s"],
            "flink-sql": lambda topic, expect, _tag: bench_peer_flink.run(
                bootstrap, topic, state / "flink-peer", expect
            )["wall_s"],
        }
        for round_no in range(args.rounds):
            order = SYSTEMS[round_no % 3 :] + SYSTEMS[: round_no % 3]
            for system in order:
                for kind, topic, expect in (
                    ("empty", EMPTY_TOPIC, 0),
                    ("full", FULL_TOPIC, args.count),
                ):
                    wall = runners[system](topic, expect, f"r{round_no + 1}_{kind}")
                    walls[system][kind].append(wall)
                    print(
                        f"round {round_no + 1}: {system:<11} {kind:<5} topic {wall:6.1f} s "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )

    result: dict = {
        "date": began.strftime("%Y-%m-%d"),
        "started_utc": began.strftime("%H:%M:%S"),
        "finished_utc": datetime.now(tz=UTC).strftime("%H:%M:%S"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "ratings": args.count,
        "partitions": 3,
        "rounds": args.rounds,
        "generator": generator,
        **{system: best_net(walls[system], args.count) for system in SYSTEMS},
    }
    ours = result["cinestream"]
    for peer in ("naive-spark", "flink-sql"):
        theirs = result[peer]
        result[f"cinestream_vs_{peer}"] = ratio(ours["net_rate_per_s"], theirs["net_rate_per_s"])
        result[f"cinestream_vs_{peer}_per_round"] = [
            ratio(a, b)
            for a, b in zip(
                ours["per_round_net_rate_per_s"], theirs["per_round_net_rate_per_s"], strict=True
            )
        ]
    out = state / "side_by_side.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\nload average (1/5/15 min) before {load_before}, after {result['load_average_after']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
