"""The naive Spark peer: the job a user writes first, as one cold spark-submit.

    .venv/bin/python bench/bench_peer_spark.py --bootstrap 127.0.0.1:29792 --topic T
                                               --out-topic O [--expect N] [--work DIR]

Structured Streaming over the whole topic (available-now, from the earliest offsets): the JSON
parsed with ``from_json``, Spark's built-in ``window`` (1-minute tumbling on the event time, a
2-minute watermark), ``count``, ``avg`` and ``percentile_approx`` (p50, p95: approximate, no top
movies, no dead-letter queue, no store), update mode, into a Kafka topic (key: the window's
start). It is submitted with the same pyspark 4.2.0, the project's spark-sql-kafka jars
(``cinestream.jars``) and the same master, driver memory and session settings as cinestream's own
jobs (``cinestream.stream.submit``), so the two differ in the pipeline only.

Runs one whole cold process (spark-submit: JVM, Python, the query) with a fresh checkpoint under
``--work`` and prints one JSON line with its wall time. Then (not timed) it reads the output topic
back, the latest value per window, and with ``--expect N`` fails unless the windows count exactly
N ratings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from peer_args import OneLineParser, host_port

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "user_id BIGINT, movie_id BIGINT, rating DOUBLE, timestamp BIGINT"


def job(bootstrap: str, topic: str, out_topic: str, checkpoint: str) -> None:
    """The streaming query (inside spark-submit)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.appName("bench_peer_spark").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ratings = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("r"))
        .select("r.*")
        .where("rating IS NOT NULL AND timestamp IS NOT NULL")
        .withColumn("event_time", F.timestamp_millis("timestamp"))
        .withWatermark("event_time", "2 minutes")
    )
    metrics = ratings.groupBy(F.window("event_time", "1 minute")).agg(
        F.count("*").alias("count"),
        F.avg("rating").alias("avg_rating"),
        F.percentile_approx("rating", [0.5, 0.95]).alias("p"),
    )
    out = metrics.select(
        F.date_format("window.start", "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").alias("key"),
        F.to_json(
            F.struct(
                F.col("window.start").alias("window_start"),
                F.col("window.end").alias("window_end"),
                "count",
                "avg_rating",
                F.col("p")[0].alias("p50_rating"),
                F.col("p")[1].alias("p95_rating"),
            )
        ).alias("value"),
    )
    query = (
        out.writeStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("topic", out_topic)
        .option("checkpointLocation", checkpoint)
        .outputMode("update")
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    spark.stop()


def create_topic(bootstrap: str, topic: str) -> None:
    """``topic`` with one partition, emptied first when it exists."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if topic in admin.list_topics(timeout=30).topics:
        admin.delete_topics([topic])[topic].result()
        deadline = time.monotonic() + 60
        while topic in admin.list_topics(timeout=30).topics:
            if time.monotonic() > deadline:
                sys.exit(f"could not delete the old {topic}")
            time.sleep(0.2)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()


def counted(bootstrap: str, topic: str) -> tuple[int, int]:
    """(windows, ratings) in ``topic``: the latest value per window key, summed."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-peer-spark-check-{os.getpid()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            sys.exit(f"the output topic {topic} is missing")
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=30)[1] for p in partitions}
        consumer.assign(partitions)
        latest: dict[bytes, int] = {}
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 120
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                sys.exit(f"could not read {topic} back to its end offsets {ends}")
            for message in consumer.consume(10_000, timeout=1):
                if message.error():
                    continue
                latest[message.key()] = json.loads(message.value())["count"]
                if message.offset() + 1 >= ends[message.partition()]:
                    done.add(message.partition())
        return len(latest), sum(latest.values())
    finally:
        consumer.close()


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=host_port, help="Kafka host:port")
    parser.add_argument("--topic", help="the ratings topic (read whole)")
    parser.add_argument("--out-topic", help="where the window metrics go (a new topic per run)")
    parser.add_argument("--expect", type=int, default=None, help="ratings the windows must count")
    parser.add_argument(
        "--work", type=Path, default=REPO / ".state-bench-peers" / "spark-peer", help="scratch"
    )
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("bootstrap", "topic", "out_topic"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} is required")
    if args.expect is not None and args.expect < 0:
        parser.error(f"--expect must be >= 0, got {args.expect}")

    if args.job:  # inside spark-submit: the measured process
        job(args.bootstrap, args.topic, args.out_topic, args.checkpoint)
        return

    # Settings (for the spark-submit command line) read the environment: a state dir of the
    # bench's own, never the default stack's.
    os.environ.setdefault("CINESTREAM_STATE_DIR", str(args.work))
    result = run(args.bootstrap, args.topic, args.out_topic, args.work, args.expect)
    print(json.dumps(result))


def run(bootstrap: str, topic: str, out_topic: str, work: Path, expect: int | None) -> dict:
    """One cold spark-submit of the peer, timed; then its output counted (not timed)."""
    from cinestream.settings import Settings
    from cinestream.stream.submit import spark_env, spark_submit_command

    work.mkdir(parents=True, exist_ok=True)
    create_topic(bootstrap, out_topic)  # brokers here do not create topics on first write
    checkpoint = work / f"checkpoint-{out_topic}"
    shutil.rmtree(checkpoint, ignore_errors=True)
    args = [
        "--job",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--out-topic",
        out_topic,
        "--checkpoint",
        str(checkpoint),
    ]
    cmd = spark_submit_command(Settings(), "bench_peer_spark.py", args)
    cmd[-1 - len(args)] = str(Path(__file__).resolve())  # this file, not spark_jobs/
    cmd[cmd.index("--name") + 1] = "bench_peer_spark"
    log = work / f"{out_topic}.log"
    began = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(cmd, env=spark_env(), stdout=out, stderr=subprocess.STDOUT)
    wall = time.monotonic() - began
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        sys.exit(f"the naive Spark peer failed (exit {code}); see {log}:\n{tail}")
    windows, ratings = counted(bootstrap, out_topic)
    result = {
        "peer": "naive-spark",
        "topic": topic,
        "wall_s": round(wall, 2),
        "windows": windows,
        "ratings_counted": ratings,
    }
    if expect is not None and ratings != expect:
        sys.exit(
            f"the naive Spark peer miscounted: its windows sum to {ratings:,}, "
            f"{expect:,} were produced ({json.dumps(result)})"
        )
    return result


if __name__ == "__main__":
    main()
