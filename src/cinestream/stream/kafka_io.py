"""The Spark jobs' Kafka reads and writes: the streaming and the batch read of ``ratings``, and
the DLQ written through Spark's Kafka sink."""

from __future__ import annotations

import json
from typing import Any

from cinestream.schemas import DLQ_MAX_MESSAGE_BYTES
from cinestream.settings import Settings

# Consumer settings of every Spark read of ``ratings``: larger fetches and polls (Kafka's defaults
# are 1 MiB per partition and 500 records a poll, ~5,000 polls for a million small ratings). On
# this machine they made Spark's pass over 1,000,000 ratings 20% faster warm and 25% cold
# (bench/spark_ceiling.py, 2026-11-29).
KAFKA_READ_OPTIONS = {
    "kafka.max.poll.records": "20000",
    "kafka.max.partition.fetch.bytes": str(16 * 2**20),
    "kafka.fetch.max.bytes": str(64 * 2**20),
}


def ratings_stream(
    spark: Any, settings: Settings, partitions: int = 1, starting_offsets: str | None = None
) -> Any:
    """The streaming read of ``ratings`` (after a first run the checkpoint sets the offsets);
    ``partitions``: the topic's, for ``Settings.spark_max_offsets_per_trigger``;
    ``starting_offsets``: where a new checkpoint starts (the store's offsets as JSON, or
    earliest/latest; default the configured one)."""
    return (
        spark.readStream.format("kafka")
        .options(**settings.spark_kafka_options)
        .options(**KAFKA_READ_OPTIONS)
        .option("subscribe", settings.ratings_topic)
        .option("startingOffsets", starting_offsets or settings.starting_offsets)
        # Never skip silently: a gap in the offsets fails the query (the start plan explains).
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", settings.spark_max_offsets_per_trigger(partitions))
        .option("maxRecordsPerPartition", records_per_task(spark, settings))
        .option("includeHeaders", "false")
        .load()
    )


def records_per_task(spark: Any, settings: Settings) -> int:
    """The most records one Spark task reads (maxRecordsPerPartition):
    CINESTREAM_KAFKA_MAX_RECORDS_PER_TASK, else a full batch spread over twice the cores Spark
    has. Three topic partitions on two cores would otherwise run as two waves, the second with
    a core idle; small live batches stay one task per partition (splitting them costs more
    than it saves)."""
    if settings.kafka_max_records_per_task:
        return settings.kafka_max_records_per_task
    cores = max(1, int(spark.sparkContext.defaultParallelism))
    return max(10_000, settings.batch_ratings_limit // (2 * cores))


def ratings_batch(
    spark: Any, settings: Settings, starting: dict[int, int], ending: dict[int, int]
) -> Any:
    """A batch read of ``ratings`` over ``[starting, ending)`` offsets per partition."""
    topic = settings.ratings_topic

    def as_json(offsets: dict[int, int]) -> str:
        return json.dumps({topic: {str(p): o for p, o in sorted(offsets.items())}})

    return (
        spark.read.format("kafka")
        .options(**settings.spark_kafka_options)
        .options(**KAFKA_READ_OPTIONS)
        .option("subscribe", topic)
        .option("startingOffsets", as_json(starting))
        .option("endingOffsets", as_json(ending))
        .option("failOnDataLoss", "false")
        .option("maxRecordsPerPartition", records_per_task(spark, settings))
        .load()
    )


def write_dlq(parsed: Any, settings: Settings, *, only_large: bool = False) -> None:
    """Write the invalid records of a parsed batch to the dead-letter topic, with their reasons,
    through Spark's Kafka sink: for a batch whose DLQ messages did not come with its cells
    (together more than ``spark.driver.maxResultSize``).

    ``only_large`` (those that did not come along although the others did) writes nothing: every
    message is bounded (``schemas.DLQ_VALUE_MAX_BYTES``) and comes along with the cells now.
    """
    from cinestream.stream.transforms import dlq_records

    if only_large:
        return
    (
        dlq_records(parsed)
        .write.format("kafka")
        .options(**settings.spark_kafka_options)
        # Its producer's default (1 MiB) is less than a DLQ record with the largest key.
        .option("kafka.max.request.size", str(DLQ_MAX_MESSAGE_BYTES))
        .option("topic", settings.dlq_topic)
        .save()
    )
