"""The window cells (``schemas.CELL_FIELDS``) that the Spark jobs hand over to the store, for the
stream and the backfill (what they read and write in Kafka: :mod:`cinestream.stream.kafka_io`)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cinestream.schemas import CELL_FIELDS


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
