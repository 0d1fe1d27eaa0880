"""The background commit: a micro-batch's counts go to PostgreSQL on a thread of their own while
Spark reads and aggregates the next batch, then its windows and invalid records are published.

Batches still commit one at a time and in order: one thread, and a batch is submitted only after
the previous one's commit succeeded (:meth:`BatchCommitter.await_pending`), so a failed commit
fails the next batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import commit as store_commit
from cinestream.store.checkpoint_lock import CheckpointLock
from cinestream.store.connection import retry_on_disconnect
from cinestream.stream.housekeeping import Housekeeping
from cinestream.stream.publisher import Publisher
from cinestream.stream.store_session import StoreSession

log = logging.getLogger("cinestream.processor")


@dataclasses.dataclass
class Handoff:
    """A batch as Spark's pass hands it to the commit, with what its log line reports."""

    batch: store_commit.BatchCommit
    phases: dict[str, float]
    began: float
    invalid: int
    cells_rows: int


class BatchCommitter:
    """Commits handed-off batches in order on one background thread and keeps the run's totals."""

    def __init__(
        self,
        settings: Settings,
        lock: CheckpointLock,
        session: StoreSession,
        publisher: Publisher,
        housekeeping: Housekeeping,
    ) -> None:
        self.settings = settings
        self.lock = lock
        self.session = session
        self.publisher = publisher
        self.housekeeping = housekeeping
        # One thread: batches commit one at a time, in order, behind Spark's next batch.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-commit")
        self._pending: Future[None] | None = None
        self.totals = {"batches": 0, "valid": 0, "invalid": 0, "late": 0}

    def submit(self, handoff: Handoff) -> None:
        """Commit ``handoff`` in the background (after :meth:`await_pending`)."""
        self._pending = self._executor.submit(self._commit, handoff)

    def failed(self) -> bool:
        """True when the batch handed to the background commit has failed."""
        pending = self._pending
        return pending is not None and pending.done() and pending.exception() is not None

    def await_pending(self) -> None:
        """Wait for the batch handed to the background commit; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def finish(self) -> BaseException | None:
        """After the query ended: wait for the last handed-off batch; its error, if any."""
        try:
            self.await_pending()
        except Exception as exc:
            log.error("the last batch's commit failed: %s", exc)
            return exc
        return None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def _commit(self, handoff: Handoff) -> None:
        """Commit one batch to PostgreSQL, then publish its windows (the background thread)."""
        s = self.settings
        batch, phases = handoff.batch, handoff.phases

        def commit() -> store_commit.BatchResult:
            self.lock.ensure_held()  # may take the lock again, with a new token
            return self.session.call(
                lambda conn: store_commit.commit_batch(
                    conn, dataclasses.replace(batch, fencing_token=self.lock.token)
                )
            )

        what = f"batch {batch.batch_id}"
        store_began = time.monotonic()
        result = retry_on_disconnect(commit, timeout_s=s.db_retry_timeout_s, what=what)
        phases["store"] = time.monotonic() - store_began
        if result.already_committed:
            log.info(
                "batch %d was already committed (replay after a restart); publishing what is "
                "still pending",
                batch.batch_id,
            )
        publish_began = time.monotonic()
        published = retry_on_disconnect(
            self.publisher.metrics, timeout_s=s.db_retry_timeout_s, what=what
        )
        phases["publish"] = time.monotonic() - publish_began
        dlq_began = time.monotonic()
        dlq_published = retry_on_disconnect(
            self.publisher.dlq, timeout_s=s.db_retry_timeout_s, what=what
        )
        phases["dlq"] = time.monotonic() - dlq_began
        self.housekeeping.after_commit()
        if not result.already_committed:
            self.totals["batches"] += 1
            self.totals["valid"] += result.valid
            self.totals["invalid"] += result.invalid
            self.totals["late"] += result.late
        log.info(
            "batch %d: %d valid, %d invalid -> %s, %d late; %d windows and %d invalid records "
            "published; watermark %s; end offsets %s; %.2fs (%s; %d cells)",
            batch.batch_id,
            result.valid,
            handoff.invalid,
            s.dlq_topic,
            result.late,
            published,
            dlq_published,
            format_time(result.watermark_ms) if result.watermark_ms else "-",
            json.dumps(batch.end_offsets, sort_keys=True),
            time.monotonic() - handoff.began,
            ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items()),
            handoff.cells_rows,
        )
