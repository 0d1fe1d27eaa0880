"""The ratings stream processor: Kafka ``ratings`` -> exact window metrics, exactly once.

Each micro-batch is parsed and validated, reduced to per-window aggregates in one Spark pass, and
committed to PostgreSQL in one transaction that also records the batch id and the DLQ messages
of its invalid records (the store's outbox), so replaying a batch after a crash changes nothing.
Metrics of the windows the batch touched are then published to the compacted ``metrics`` topic,
and the outbox to the DLQ, once (``store.dlq_outbox``).

The commit runs in the background while Spark reads and aggregates the next batch (the two take
turns otherwise: Spark idles while PostgreSQL commits). Batches still commit one at a time and in
order: a batch's commit starts only after the previous one succeeded, and a failed commit fails
the next batch. The hand-off is recorded in PostgreSQL before Spark marks the batch done, so a
processor that stops before the commit finishes leaves a checkpoint one batch ahead of the store
that the next start recognises and reads again (``StartPlan.unfinished_batch``).

The processor is a conductor: the lock and its watch (:mod:`cinestream.stream.watch`), the start
plan (:mod:`cinestream.stream.start_plan`), Spark's pass over a batch
(:mod:`cinestream.stream.batch_pass`), the background commit (:mod:`cinestream.stream.committer`),
publication (:mod:`cinestream.stream.publisher`) and housekeeping
(:mod:`cinestream.stream.housekeeping`) each live in their own module.

Nothing stays in Spark state: every batch updates its windows in place, so an ``available-now``
run over a backlog leaves every window complete.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinestream.errors import CheckpointMismatch, CinestreamError, ProcessorBusy
from cinestream.settings import Settings
from cinestream.store import checkpoint_lock, schema
from cinestream.store.connection import connect, retry_on_disconnect
from cinestream.stream.batch_pass import BatchPass
from cinestream.stream.checkpoint import HadoopFS, storage_error
from cinestream.stream.checkpoint_log import mark_not_done
from cinestream.stream.committer import BatchCommitter
from cinestream.stream.housekeeping import Housekeeping
from cinestream.stream.kafka_io import ratings_stream
from cinestream.stream.publisher import Publisher
from cinestream.stream.start_plan import StartPlan, log_plan, plan_start, unfinished_note
from cinestream.stream.stop_files import checkpoint_stop_file
from cinestream.stream.store_session import StoreSession
from cinestream.stream.watch import QueryWatch, acquire_lock
from cinestream.timeparse import spark_interval

log = logging.getLogger("cinestream.processor")

# A continuous processor's failure budget starts again after this long without a failure.
HEALTHY_RESET_S = 600


class RestartBudget:
    """Restarts of a failed continuous query: exponential back-off, at most ``max_restarts`` in
    a row; a failure after ``healthy_s`` without one starts a new budget."""

    def __init__(
        self,
        max_restarts: int,
        healthy_s: float = HEALTHY_RESET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_restarts = max_restarts
        self.healthy_s = healthy_s
        self.clock = clock
        self.failures = 0
        self._last = clock()

    def failed(self) -> float | None:
        """Count a failure; the back-off before restarting, or None when the budget is spent."""
        now = self.clock()
        if now - self._last >= self.healthy_s:
            self.failures = 0
        self.failures += 1
        self._last = now
        if self.failures > self.max_restarts:
            return None
        return float(min(60, 2**self.failures))


class StreamProcessor:
    """Runs the streaming query with a graceful stop, restarts and one instance per checkpoint."""

    def __init__(
        self,
        spark: Any,
        settings: Settings,
        *,
        trigger: str = "available-now",
        interval: str | None = None,
        max_duration_s: float | None = None,
        lock_wait_s: float = 0,
        max_restarts: int = 10,
        own_stop_file: Path | None = None,
    ) -> None:
        if trigger not in ("available-now", "continuous"):
            raise CinestreamError(f"unknown trigger {trigger!r}: use available-now or continuous")
        self.spark = spark
        self.settings = settings
        self.trigger = trigger
        self.interval = interval or settings.trigger_interval
        self.processing_time = spark_interval(self.interval)  # a bad interval fails here
        self.max_duration_s = max_duration_s
        self.lock_wait_s = lock_wait_s
        self.max_restarts = max_restarts
        # A stop file of this process alone (an Airflow task stops its own processor with it);
        # the checkpoint's shared stop file stops whichever processor holds the checkpoint.
        self.own_stop_file = own_stop_file
        self.fs = HadoopFS(spark)
        self.url = settings.resolved_database_url
        self.lock = checkpoint_lock.CheckpointLock(self.url, settings.checkpoint_dir)
        self.session = StoreSession(self.url)
        self.publisher = Publisher(settings, self.session)
        self.committer = BatchCommitter(
            settings, self.lock, self.session, self.publisher, Housekeeping(settings, self.session)
        )
        self.batch_pass = BatchPass(settings, self.fs)
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._topic_id: str | None = None
        self._partitions = 1
        self._starting_offsets = settings.starting_offsets

    @property
    def totals(self) -> dict[str, int]:
        return self.committer.totals

    # ---------------------------------------------------------------------------------------
    def run(self) -> int:
        """Take the lock, check the start plan, then run (and restart) the query; exit code."""
        s = self.settings
        self._install_signal_handlers()
        checkpoint_stop_file(s).unlink(missing_ok=True)
        if self.own_stop_file is not None:
            self.own_stop_file.unlink(missing_ok=True)
        # The schema first: a new, empty database gets its tables before the lock needs them.
        with connect(self.url) as conn:
            schema.ensure_schema(conn)
        acquire_lock(self.lock, s, self.lock_wait_s)
        try:
            self._log_plan(self._plan())
            self._publish_left_pending()
            return self._supervise()
        finally:
            self.committer.shutdown()
            self.session.drop()
            self.publisher.close()
            self.lock.release()

    def _publish_left_pending(self) -> None:
        """Windows a previous processor committed but could not publish (Kafka was down when it
        stopped) are published now, not at the next batch (which may be long in coming); likewise
        invalid records committed to the outbox but not yet in the DLQ."""
        timeout_s = self.settings.db_retry_timeout_s
        published = retry_on_disconnect(self.publisher.metrics, timeout_s=timeout_s, what="start")
        if published:
            log.info("published %d windows left pending by an earlier run", published)
        dlq = retry_on_disconnect(self.publisher.dlq, timeout_s=timeout_s, what="start")
        if dlq:
            log.info(
                "published %d invalid records left in the store's outbox by an earlier run to %s",
                dlq,
                self.settings.dlq_topic,
            )

    def _plan(self) -> StartPlan:
        """Check the checkpoint against the topic and the store (at start and every restart)."""
        with connect(self.url) as conn:
            stored = checkpoint_lock.stored_checkpoint(conn, self.settings.checkpoint_dir)
        plan = plan_start(self.settings, self.fs, stored)
        if plan.unfinished_batch is not None:
            deleted = mark_not_done(self.fs, self.settings.checkpoint_dir, plan.unfinished_batch)
            log.warning(
                "%s: marked it not done (deleted %s) so that Spark reads the same offsets again",
                unfinished_note(plan.unfinished_batch),
                ", ".join(deleted),
            )
            plan = plan_start(self.settings, self.fs, stored)
        self._topic_id = plan.topic_id
        self._partitions = len(plan.end_offsets)
        self._starting_offsets = plan.spark_starting_offsets(self.settings.ratings_topic)
        return plan

    def _log_plan(self, plan: StartPlan) -> None:
        log_plan(plan, self.settings, self.trigger, self.interval, self._partitions)

    # ---------------------------------------------------------------------------------------
    def _start_query(self) -> Any:
        s = self.settings
        writer = (
            ratings_stream(self.spark, s, self._partitions, self._starting_offsets)
            .writeStream.queryName("ratings_stream_processor")
            .option("checkpointLocation", s.checkpoint_dir)
            .foreachBatch(self._process_batch)
        )
        if self.trigger == "available-now":
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=self.processing_time)
        return writer.start()

    def _supervise(self) -> int:
        began = time.monotonic()
        budget = RestartBudget(self.max_restarts)
        while True:
            query = self._start_query()
            log.info("query %s started (run id %s)", query.id, query.runId)
            stopped = self._watch(query, began)
            error = query.exception()
            commit_error = self.committer.finish()
            if isinstance(commit_error, (CheckpointMismatch, ProcessorBusy)) and not self._fatal:
                self._fatal = commit_error
            if self._fatal is not None:
                raise self._fatal
            if error is None and commit_error is None:
                elapsed = time.monotonic() - began
                records = self.totals["valid"] + self.totals["invalid"] + self.totals["late"]
                log.info(
                    "processor finished: %d batches, %d valid, %d invalid -> %s, %d late in "
                    "%.2fs after the JVM was up (%.0f records/s)",
                    self.totals["batches"],
                    self.totals["valid"],
                    self.totals["invalid"],
                    self.settings.dlq_topic,
                    self.totals["late"],
                    elapsed,
                    records / elapsed if elapsed else 0.0,
                )
                return 0
            if error is not None:
                text = str(error.desc if hasattr(error, "desc") else error)
                # A checkpoint storage that failed (an HDFS NameNode or DataNode gone) is said
                # as such, with its fix, not as Spark's first line alone.
                message = storage_error(self.settings.checkpoint_dir, text) or (
                    text.splitlines()[0] if text.strip() else text
                )
            else:
                message = f"the last batch's commit failed: {commit_error}"
            backoff = budget.failed()
            if stopped or self.trigger != "continuous" or backoff is None:
                raise CinestreamError(f"streaming query failed: {message[:500]}")
            log.error(
                "query failed (%s); restarting from the checkpoint in %.0fs (%d/%d in a row)",
                message[:300],
                backoff,
                budget.failures,
                self.max_restarts,
            )
            if self._stop.wait(backoff):
                return 0
            # The topic or the store may have changed under the failed query (a recreated topic):
            # check again, as at start, before reading on.
            self._log_plan(self._plan())

    def _watch(self, query: Any, began: float) -> bool:
        """Wait for the query until it ends or something stops it between batches."""
        stop_files = [checkpoint_stop_file(self.settings)]
        if self.own_stop_file is not None:
            stop_files.append(self.own_stop_file)
        watch = QueryWatch(
            self.lock,
            self._stop,
            self.committer.failed,
            stop_files,
            supervisor_pid=self.settings.supervisor_pid,
            max_duration_s=self.max_duration_s,
        )
        stopped = watch.watch(query, began)
        # A batch that failed while the query stopped keeps its own error (as it did when the
        # watch set the lost lock first and the batch overwrote it).
        if watch.lost_lock is not None and self._fatal is None:
            self._fatal = watch.lost_lock
        return stopped

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            log.info("received %s: stopping after the current batch", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # ---------------------------------------------------------------------------------------
    def _process_batch(self, df: Any, batch_id: int) -> None:
        try:
            self._process(df, batch_id)
        except (CheckpointMismatch, ProcessorBusy) as exc:
            self._fatal = exc
            raise

    def _process(self, df: Any, batch_id: int) -> None:
        handoff = self.batch_pass.prepare(df, batch_id, self._topic_id)
        # The previous batch's commit first: batches commit in order, and its failure fails this
        # batch (read again after the restart) before anything of this one is handed off.
        wait_began = time.monotonic()
        self.committer.await_pending()
        handoff.phases["wait"] = time.monotonic() - wait_began
        retry_on_disconnect(
            lambda: self.lock.hand_off(batch_id),
            timeout_s=self.settings.db_retry_timeout_s,
            what=f"batch {batch_id}",
        )
        self.committer.submit(handoff)
