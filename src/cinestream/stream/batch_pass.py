"""Spark's side of one micro-batch: parse and validate the records, reduce them to per-window
cells in one pass (the invalid ones to their DLQ messages), and read where the batch starts and
ends from the checkpoint: a :class:`~cinestream.stream.committer.Handoff` for the commit."""

from __future__ import annotations

import logging
import time
from typing import Any

from cinestream.settings import Settings
from cinestream.store import commit as store_commit
from cinestream.stream.cells import BatchCells
from cinestream.stream.checkpoint import CheckpointFS
from cinestream.stream.checkpoint_log import checkpoint_offsets, initial_offsets, query_id
from cinestream.stream.committer import Handoff
from cinestream.stream.kafka_io import write_dlq

log = logging.getLogger("cinestream.processor")


class BatchPass:
    """Turns each micro-batch DataFrame of the query into the commit's hand-off."""

    def __init__(self, settings: Settings, fs: CheckpointFS) -> None:
        self.settings = settings
        self.fs = fs
        self._query_id: str | None = None

    def prepare(self, df: Any, batch_id: int, topic_id: str | None) -> Handoff:
        s = self.settings
        began = time.monotonic()
        now_ms = int(time.time() * 1000)
        cells, dlq_through_driver, parsed = self._cells(df, batch_id, now_ms)
        phases = {"spark": time.monotonic() - began}
        # The DLQ messages that came with the cells are committed with the counts (the outbox)
        # and published after the commit, once. Those that did not come along go through
        # Spark's Kafka sink now, before the commit: at least once (a batch read again after a
        # crash writes them again).
        if cells.dlq_left:
            sink_began = time.monotonic()
            write_dlq(parsed, s, only_large=dlq_through_driver)
            phases["sink"] = time.monotonic() - sink_began
        handoff_began = time.monotonic()
        cells_csv = cells.to_csv()
        phases["handoff"] = time.monotonic() - handoff_began
        _, offsets = checkpoint_offsets(self.fs, s.checkpoint_dir, batch_id)
        end_offsets = offsets.get(s.ratings_topic, {})
        batch = store_commit.BatchCommit(
            checkpoint=s.checkpoint_dir,
            topic=s.ratings_topic,
            topic_id=topic_id,
            batch_id=batch_id,
            cells_csv=cells_csv,
            invalid=cells.invalid,
            max_event_ms=cells.max_event_ms(),
            wall_clock_ms=now_ms,
            allowed_lateness_ms=s.allowed_lateness_s * 1000,
            end_offsets={str(k): v for k, v in end_offsets.items()},
            primary_window_type=s.window_types[0],
            start_offsets=self.start_offsets(batch_id),
            window_types=tuple(s.window_types),
            query_id=self.checkpoint_query_id(),
            dlq=cells.dlq_outbox,
        )
        return Handoff(batch, phases, began, cells.invalid, cells.rows)

    def _cells(self, df: Any, batch_id: int, now_ms: int) -> tuple[BatchCells, bool, Any]:
        """The batch's cells, whether its DLQ messages came with them, and the parsed batch."""
        from cinestream.stream.transforms import parse_ratings, window_cells

        s = self.settings
        parsed = parse_ratings(df)
        limit_ms = now_ms + s.future_tolerance_s * 1000
        try:
            cells = BatchCells.from_arrow(
                window_cells(parsed, s.windows, limit_ms, with_dlq=True).toArrow()
            )
            return cells, True, parsed
        except Exception as exc:  # Spark's error types vary; only this one is handled here
            if "maxResultSize" not in str(exc):
                raise
        # A flood of long invalid records: their DLQ messages would not fit the driver.
        log.warning(
            "batch %d: the DLQ messages of its invalid records exceed spark.driver.maxResultSize; "
            "counting again without them and writing them through Spark's Kafka sink (a second "
            "pass over the batch)",
            batch_id,
        )
        cells = BatchCells.from_arrow(window_cells(parsed, s.windows, limit_ms).toArrow())
        return cells, False, parsed

    def start_offsets(self, batch_id: int) -> dict[str, int] | None:
        """Where a batch starts: the previous batch's end in Spark's offset log, or for the first
        batch where the query started (None only when Spark has purged that entry: the store
        then refuses the commit rather than guess)."""
        s = self.settings
        if batch_id == 0:
            offsets = initial_offsets(self.fs, s.checkpoint_dir)
        else:
            previous = f"{s.checkpoint_dir.rstrip('/')}/offsets/{batch_id - 1}"
            if not self.fs.exists(previous):
                return None
            _, offsets = checkpoint_offsets(self.fs, s.checkpoint_dir, batch_id - 1)
        start = offsets.get(s.ratings_topic)
        return None if start is None else {str(k): v for k, v in start.items()}

    def checkpoint_query_id(self) -> str | None:
        """The checkpoint's query id (Spark's ``metadata``), read once."""
        if self._query_id is None:
            self._query_id = query_id(self.fs, self.settings.checkpoint_dir)
        return self._query_id
