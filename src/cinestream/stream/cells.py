"""What the Spark jobs read and hand over: the Kafka readers, the DLQ writer, and the window
cells (``schemas.CELL_FIELDS``) passed from Spark to the store, for the stream and the backfill."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cinestream.schemas import CELL_FIELDS, DLQ_MAX_MESSAGE_BYTES
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


@dataclass(frozen=True)
class BatchCells:
    """A batch's ``window_cells`` on the driver: the valid cells, the invalid records' count and
    (``with_dlq``) their DLQ messages with, in the same order, where each record is in the
    ratings topic (``dlq_sources``: partition, offset)."""

    valid: Any  # pyarrow.Table with CELL_FIELDS (+ max_event_ms)
    invalid: int
    dlq: tuple[tuple[bytes | None, bytes], ...] = ()
    dlq_sources: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_arrow(cls, cells: Any) -> BatchCells:
        """Split ``window_cells(...).toArrow()``: invalid records form the rows without a window
        (with ``with_dlq`` one per record and its DLQ message, else one for all)."""
        import pyarrow.compute as pc

        from cinestream.stream.transforms import DLQ_CELL_COLUMNS

        invalid_mask = pc.is_null(cells["window_type"])
        invalid_rows = cells.filter(invalid_mask)
        invalid = int(pc.sum(invalid_rows["n"]).as_py() or 0)
        dlq: tuple[tuple[bytes | None, bytes], ...] = ()
        sources: tuple[tuple[int, int], ...] = ()
        if "dlq_value" in cells.column_names and invalid_rows.num_rows:
            inline = invalid_rows.filter(pc.is_valid(invalid_rows["dlq_value"]))
            dlq = tuple(
                (key, value.encode())
                for key, value in zip(
                    inline["dlq_key"].to_pylist(), inline["dlq_value"].to_pylist(), strict=True
                )
            )
            sources = tuple(
                zip(
                    inline["dlq_source_partition"].to_pylist(),
                    inline["dlq_source_offset"].to_pylist(),
                    strict=True,
                )
            )
        valid = cells.filter(pc.invert(invalid_mask))
        if "dlq_value" in valid.column_names:
            valid = valid.drop_columns(DLQ_CELL_COLUMNS)
        return cls(valid, invalid, dlq, sources)

    @property
    def dlq_outbox(self) -> tuple[tuple[int, int, bytes | None, bytes], ...]:
        """The DLQ messages as the store's outbox takes them: (source partition, source offset,
        key, value)."""
        return tuple(
            (partition, offset, key, value)
            for (partition, offset), (key, value) in zip(self.dlq_sources, self.dlq, strict=True)
        )

    @property
    def dlq_left(self) -> int:
        """Invalid records whose DLQ message did not come with the cells (all of them when the
        cells were counted without: see :func:`write_dlq`)."""
        return self.invalid - len(self.dlq)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> BatchCells:
        """Valid cells from tuples in ``CELL_FIELDS`` order (tests, benchmarks, tools)."""
        import pyarrow as pa

        # ``future`` may be left out (0): most callers hand over ordinary ratings.
        full = [tuple(r) + (0,) * (len(CELL_FIELDS) - len(r)) for r in rows]
        table = pa.Table.from_pylist([dict(zip(CELL_FIELDS, r, strict=True)) for r in full])
        if not table.num_columns:
            table = pa.table({name: pa.array([], pa.int64()) for name in CELL_FIELDS})
        return cls(table, 0)

    @property
    def rows(self) -> int:
        """Number of valid cells."""
        return int(self.valid.num_rows)

    def max_event_ms(self) -> int | None:
        """The newest event time that may move the watermark, if the batch has one."""
        import pyarrow.compute as pc

        if not self.rows or "max_event_ms" not in self.valid.column_names:
            return None
        value = pc.max(self.valid["max_event_ms"]).as_py()
        return None if value is None else int(value)

    def ratings(self, window_type: str) -> int:
        """Ratings counted in the cells of one (tumbling) window type."""
        import pyarrow.compute as pc

        of_type = self.valid.filter(pc.equal(self.valid["window_type"], window_type))
        return int(pc.sum(of_type["n"]).as_py() or 0)

    def to_csv(self) -> bytes:
        """The valid cells in the store's COPY format (``CELL_FIELDS``, no header)."""
        import pyarrow.csv as pacsv

        sink = io.BytesIO()
        pacsv.write_csv(
            self.valid.select(list(CELL_FIELDS)), sink, pacsv.WriteOptions(include_header=False)
        )
        return sink.getvalue()

    def without_windows_ending_after(self, limit_ms: int) -> tuple[BatchCells, int]:
        """The cells of windows that end by ``limit_ms``, and how many windows were left out."""
        import pyarrow.compute as pc

        late_mask = pc.greater(self.valid["window_end_ms"], limit_ms)
        left_out = self.valid.filter(late_mask)
        skipped = len(
            set(
                zip(
                    left_out["window_type"].to_pylist(),
                    left_out["window_start_ms"].to_pylist(),
                    strict=True,
                )
            )
        )
        return (
            BatchCells(
                self.valid.filter(pc.invert(late_mask)), self.invalid, self.dlq, self.dlq_sources
            ),
            skipped,
        )
