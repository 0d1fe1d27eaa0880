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

Nothing stays in Spark state: every batch updates its windows in place, so an ``available-now``
run over a backlog leaves every window complete.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from pyspark.errors import StreamingQueryException

from cinestream.errors import (
    CheckpointMismatch,
    CinestreamError,
    ProcessorBusy,
    ServiceUnavailable,
)
from cinestream.kafka.produce import new_producer, publish_dlq, publish_metrics
from cinestream.kafka.read import DlqReader
from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import checkpoints, dlq_outbox, schema
from cinestream.store import windows as store_windows
from cinestream.store.connection import connect, retry_on_disconnect
from cinestream.stream.cells import BatchCells, ratings_stream, write_dlq
from cinestream.stream.checkpoint import (
    HadoopFS,
    checkpoint_offsets,
    initial_offsets,
    mark_not_done,
    query_id,
    storage_error,
)
from cinestream.stream.start_plan import StartPlan, plan_start, stop_file, unfinished_note
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


# How often a running processor checks that it still holds its checkpoint's lock.
LOCK_CHECK_S = 5
# How often a running processor prunes per-window detail older than CINESTREAM_RETENTION.
PRUNE_EVERY_S = 600


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
        self.lock = checkpoints.CheckpointLock(self.url, settings.checkpoint_dir)
        self._conn: psycopg.Connection[Any] | None = None
        self._producer: Any = None
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._topic_id: str | None = None
        self._partitions = 1
        # One thread: batches commit one at a time, in order, behind Spark's next batch.
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-commit")
        self._pending: Future[None] | None = None
        self.totals = {"batches": 0, "valid": 0, "invalid": 0, "late": 0}
        self._pruned_at = 0.0
        self._starting_offsets = settings.starting_offsets
        self._query_id: str | None = None

    # ---------------------------------------------------------------------------------------
    def run(self) -> int:
        """Take the lock, check the start plan, then run (and restart) the query; exit code."""
        s = self.settings
        self._install_signal_handlers()
        stop_file(s).unlink(missing_ok=True)
        if self.own_stop_file is not None:
            self.own_stop_file.unlink(missing_ok=True)
        # The schema first: a new, empty database gets its tables before the lock needs them.
        with connect(self.url) as conn:
            schema.ensure_schema(conn)
        self._acquire_lock()
        try:
            self._log_plan(self._plan())
            # Windows a previous processor committed but could not publish (Kafka was down when
            # it stopped): published now, not at the next batch (which may be long in coming).
            published = retry_on_disconnect(
                self._publish_pending, timeout_s=self.settings.db_retry_timeout_s, what="start"
            )
            if published:
                log.info("published %d windows left pending by an earlier run", published)
            # Likewise invalid records committed to the outbox but not yet in the DLQ.
            dlq = retry_on_disconnect(
                self._publish_dlq, timeout_s=self.settings.db_retry_timeout_s, what="start"
            )
            if dlq:
                log.info(
                    "published %d invalid records left in the store's outbox by an earlier run "
                    "to %s",
                    dlq,
                    self.settings.dlq_topic,
                )
            return self._supervise()
        finally:
            self._close()
            self.lock.release()

    def _plan(self) -> StartPlan:
        """Check the checkpoint against the topic and the store (at start and every restart)."""
        with connect(self.url) as conn:
            stored = checkpoints.stored_checkpoint(conn, self.settings.checkpoint_dir)
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

    def _acquire_lock(self) -> None:
        if not self.lock.try_acquire():
            holder = self.lock.holder() or "another session"
            if self.lock_wait_s > 0:
                log.info(
                    "waiting up to %.0fs for the lock on checkpoint %s (held by %s)",
                    self.lock_wait_s,
                    self.settings.checkpoint_dir,
                    holder,
                )
            if not self.lock.acquire(self.lock_wait_s):
                raise ProcessorBusy(
                    f"another processor is running on checkpoint {self.settings.checkpoint_dir} "
                    f"(held by {self.lock.holder() or holder}); let it finish, stop it with "
                    "`cinestream process --stop`, or wait with --wait-for-lock SECONDS"
                )
        log.info(
            "holding the lock on checkpoint %s (fencing token %s)",
            self.settings.checkpoint_dir,
            self.lock.token,
        )

    def _log_plan(self, plan: StartPlan) -> None:
        s = self.settings
        offsets = ", ".join(
            f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.start_offsets.items())
        )
        ends = ", ".join(f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.end_offsets.items()))
        if plan.resumed_batch is None and plan.from_store:
            log.info(
                "no checkpoint at %s: the store already holds topic %s up to %s, so the "
                "processor resumes there (topic ends at %s; %d records to process)",
                s.checkpoint_dir,
                s.ratings_topic,
                offsets,
                ends,
                plan.backlog,
            )
        elif plan.resumed_batch is None:
            log.info(
                "no checkpoint at %s: first run, starting from %s: %s (topic ends at %s; "
                "%d records to process)",
                s.checkpoint_dir,
                s.starting_offsets,
                offsets,
                ends,
                plan.backlog,
            )
            if plan.skipped_by_latest:
                log.warning("%s", plan.latest_warning(s.ratings_topic))
        else:
            log.info(
                "resuming from checkpoint %s after batch %d: %s (topic ends at %s; lag %d)",
                s.checkpoint_dir,
                plan.resumed_batch,
                offsets,
                ends,
                plan.backlog,
            )
        log.info(
            "kafka %s, topic %s (id %s) -> metrics %s, dlq %s; database %s; windows %s; "
            "allowed lateness %ss; trigger %s%s; at most %d ratings (%d cells) a batch",
            s.kafka_description,
            s.ratings_topic,
            plan.topic_id,
            s.metrics_topic,
            s.dlq_topic,
            s.redacted_database_url(),
            ",".join(s.window_types),
            s.allowed_lateness_s,
            self.trigger,
            f" every {self.interval}" if self.trigger == "continuous" else "",
            s.spark_max_offsets_per_trigger(self._partitions),
            s.spark_max_offsets_per_trigger(self._partitions) * s.cells_per_rating,
        )

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
            commit_error = self._finish_pending()
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

    def _supervisor_gone(self) -> bool:
        """True when the Airflow task that started this processor has ended (killed after a stop
        from the UI, a lost worker): the processor then stops by itself, between batches."""
        pid = os.environ.get("CINESTREAM_SUPERVISOR_PID", "")
        if not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.warning(
                "the Airflow task that started this processor (pid %s) is gone; stopping after "
                "the current batch",
                pid,
            )
            return True
        except PermissionError:
            return False
        return False

    def _watch(self, query: Any, began: float) -> bool:
        """Wait for the query; on a stop request let the running batch finish, then stop. The
        lock is checked every few seconds too, so an idle processor that lost it stops."""
        stop_files = [stop_file(self.settings)]
        if self.own_stop_file is not None:
            stop_files.append(self.own_stop_file)
        checked = time.monotonic()
        while query.isActive:
            if time.monotonic() - checked >= LOCK_CHECK_S:
                checked = time.monotonic()
                if self._supervisor_gone():
                    self._stop.set()
                try:
                    self.lock.ensure_held()
                except (ProcessorBusy, ServiceUnavailable) as exc:
                    if isinstance(exc, ProcessorBusy):
                        self._fatal = exc
                        log.error("%s", exc)
                        self._stop_gracefully(query)
                        return True
                    log.warning("cannot check the lock now: %s", exc)
            if self._commit_failed():
                # An idle query would only find out at its next batch: stop it now, so that the
                # restart reads the batch again (continuous) or the run fails (available-now).
                log.error("a batch's commit failed; stopping the query")
                self._stop_gracefully(query)
                return False
            expired = self.max_duration_s is not None and (
                time.monotonic() - began >= self.max_duration_s
            )
            for sf in stop_files:
                if sf.exists():
                    log.info("stop requested through %s", sf)
                    self._stop.set()
            if self._stop.is_set() or expired:
                if expired:
                    log.info("maximum duration reached; stopping")
                self._stop_gracefully(query)
                for sf in stop_files:
                    sf.unlink(missing_ok=True)
                return True
            try:
                query.awaitTermination(1)
            except StreamingQueryException:
                # The query failed: _supervise reads query.exception() and decides.
                return False
        return False

    def _stop_gracefully(self, query: Any, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while (
            query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        query.stop()
        log.info("query stopped between batches")

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
        from cinestream.stream.transforms import parse_ratings, window_cells

        s = self.settings
        began = time.monotonic()
        now_ms = int(time.time() * 1000)
        parsed = parse_ratings(df)
        limit_ms = now_ms + s.future_tolerance_s * 1000
        try:
            cells = BatchCells.from_arrow(
                window_cells(parsed, s.windows, limit_ms, with_dlq=True).toArrow()
            )
            dlq_through_driver = True
        except Exception as exc:  # Spark's error types vary; only this one is handled here
            if "maxResultSize" not in str(exc):
                raise
            # A flood of long invalid records: their DLQ messages would not fit the driver.
            log.warning(
                "batch %d: the DLQ messages of its invalid records exceed "
                "spark.driver.maxResultSize; counting again without them and writing them "
                "through Spark's Kafka sink (a second pass over the batch)",
                batch_id,
            )
            cells = BatchCells.from_arrow(window_cells(parsed, s.windows, limit_ms).toArrow())
            dlq_through_driver = False
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
        start_offsets = self._start_offsets(batch_id)
        batch = store_windows.BatchCommit(
            checkpoint=s.checkpoint_dir,
            topic=s.ratings_topic,
            topic_id=self._topic_id,
            batch_id=batch_id,
            cells_csv=cells_csv,
            invalid=cells.invalid,
            max_event_ms=cells.max_event_ms(),
            wall_clock_ms=now_ms,
            allowed_lateness_ms=s.allowed_lateness_s * 1000,
            end_offsets={str(k): v for k, v in end_offsets.items()},
            primary_window_type=s.window_types[0],
            start_offsets=start_offsets,
            window_types=tuple(s.window_types),
            query_id=self._checkpoint_query_id(),
            dlq=cells.dlq_outbox,
        )

        # The previous batch's commit first: batches commit in order, and its failure fails this
        # batch (read again after the restart) before anything of this one is handed off.
        wait_began = time.monotonic()
        self._await_pending()
        phases["wait"] = time.monotonic() - wait_began
        retry_on_disconnect(
            lambda: self.lock.hand_off(batch_id),
            timeout_s=s.db_retry_timeout_s,
            what=f"batch {batch_id}",
        )
        self._pending = self._committer.submit(
            self._commit, batch, phases, began, cells.invalid, cells.rows
        )

    def _commit_failed(self) -> bool:
        """True when the batch handed to the background commit has failed."""
        pending = self._pending
        return pending is not None and pending.done() and pending.exception() is not None

    def _await_pending(self) -> None:
        """Wait for the batch handed to the background commit; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _finish_pending(self) -> BaseException | None:
        """After the query ended: wait for the last handed-off batch; its error, if any."""
        try:
            self._await_pending()
        except Exception as exc:
            log.error("the last batch's commit failed: %s", exc)
            return exc
        return None

    def _commit(
        self,
        batch: store_windows.BatchCommit,
        phases: dict[str, float],
        began: float,
        invalid: int,
        cells_rows: int,
    ) -> None:
        """Commit one batch to PostgreSQL, then publish its windows (the background thread)."""
        s = self.settings

        def commit() -> store_windows.BatchResult:
            self.lock.ensure_held()  # may take the lock again, with a new token
            conn = self._connection()
            try:
                return store_windows.commit_batch(
                    conn, dataclasses.replace(batch, fencing_token=self.lock.token)
                )
            except psycopg.OperationalError:
                self._drop_connection()
                raise

        batch_id = batch.batch_id
        store_began = time.monotonic()
        result = retry_on_disconnect(
            commit, timeout_s=s.db_retry_timeout_s, what=f"batch {batch_id}"
        )
        phases["store"] = time.monotonic() - store_began
        if result.already_committed:
            log.info(
                "batch %d was already committed (replay after a restart); publishing what is "
                "still pending",
                batch_id,
            )
        publish_began = time.monotonic()
        published = retry_on_disconnect(
            self._publish_pending, timeout_s=s.db_retry_timeout_s, what=f"batch {batch_id}"
        )
        phases["publish"] = time.monotonic() - publish_began
        dlq_began = time.monotonic()
        dlq_published = retry_on_disconnect(
            self._publish_dlq, timeout_s=s.db_retry_timeout_s, what=f"batch {batch_id}"
        )
        phases["dlq"] = time.monotonic() - dlq_began
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
            self._prune()
        if not result.already_committed:
            self.totals["batches"] += 1
            self.totals["valid"] += result.valid
            self.totals["invalid"] += result.invalid
            self.totals["late"] += result.late
        log.info(
            "batch %d: %d valid, %d invalid -> %s, %d late; %d windows and %d invalid records "
            "published; watermark %s; end offsets %s; %.2fs (%s; %d cells)",
            batch_id,
            result.valid,
            invalid,
            s.dlq_topic,
            result.late,
            published,
            dlq_published,
            format_time(result.watermark_ms) if result.watermark_ms else "-",
            json.dumps(batch.end_offsets, sort_keys=True),
            time.monotonic() - began,
            ", ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items()),
            cells_rows,
        )

    def _start_offsets(self, batch_id: int) -> dict[str, int] | None:
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

    def _checkpoint_query_id(self) -> str | None:
        """The checkpoint's query id (Spark's ``metadata``), read once."""
        if self._query_id is None:
            self._query_id = query_id(self.fs, self.settings.checkpoint_dir)
        return self._query_id

    def _prune(self) -> None:
        """Delete per-window detail older than the retention (window_metrics stays)."""
        before = int(time.time() * 1000) - self.settings.retention_ms
        try:
            pruned = store_windows.prune_detail(self._connection(), before)
        except psycopg.Error as exc:  # housekeeping: the next batch tries again
            log.warning("pruning detail older than %s failed: %s", format_time(before), exc)
            self._drop_connection()
            return
        self._pruned_at = time.monotonic()
        if pruned.windows or pruned.batches:
            log.info(
                "pruned the detail of %d windows that ended before %s (%d rows; window_metrics "
                "kept) and %d batch records (CINESTREAM_RETENTION=%s)",
                pruned.windows,
                format_time(before),
                pruned.detail_rows,
                pruned.batches,
                self.settings.retention,
            )

    def _publish_pending(self) -> int:
        """Publish every window whose committed metric is not in the metrics topic yet."""
        producer = self._get_producer()
        try:
            return store_windows.publish_pending(
                self._connection(), lambda m: publish_metrics(self.settings, m, producer)
            )
        except psycopg.OperationalError:
            self._drop_connection()
            raise

    def _publish_dlq(self) -> int:
        """Publish the invalid records committed to the store's outbox to the DLQ, once."""
        producer = self._get_producer()
        try:
            done = dlq_outbox.publish_dlq_outbox(
                self._connection(),
                DlqReader(self.settings),
                lambda records: publish_dlq(self.settings, records, producer),
            )
        except psycopg.OperationalError:
            self._drop_connection()
            raise
        if done.already_there:
            log.warning(
                "%d invalid records of the store's outbox were already in %s (a publication "
                "cut short before the store recorded it): not published again",
                done.already_there,
                self.settings.dlq_topic,
            )
        return done.published

    def _get_producer(self) -> Any:
        if self._producer is None:
            self._producer = new_producer(self.settings)
        return self._producer

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Autocommit: a read between batches must not leave a transaction open, or the next
            # batch's transaction would become a savepoint inside it and never commit.
            self._conn = connect(self.url, autocommit=True)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _close(self) -> None:
        self._committer.shutdown(wait=True)
        self._drop_connection()
        if self._producer is not None:
            self._producer.flush(10)
