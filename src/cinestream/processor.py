"""The ratings stream processor: Kafka ``ratings`` -> exact window metrics, exactly once.

Each micro-batch is parsed and validated (invalid records go to the DLQ with a reason), reduced
to per-window aggregates in one Spark pass, and committed to PostgreSQL in one transaction that
also records the batch id, so replaying a batch after a crash changes nothing. Metrics of the
windows the batch touched are then published to the compacted ``metrics`` topic.

Nothing stays in Spark state: every batch updates its windows in place, so an ``available-now``
run over a backlog leaves every window complete.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cinestream import kafka_admin, store
from cinestream.checkpoint import CheckpointFS, checkpoint_offsets, committed_batch
from cinestream.errors import (
    CheckpointMismatch,
    CinestreamError,
    ProcessorBusy,
    ServiceUnavailable,
)
from cinestream.schemas import format_time, metric_key, metric_record
from cinestream.settings import Settings

log = logging.getLogger("cinestream.processor")

CELL_COLUMNS = ["window_type", "window_start_ms", "window_end_ms", "movie_id", "half_stars", "n"]


def stop_file(settings: Settings) -> Path:
    """Creating this file asks the processor on the configured checkpoint to stop gracefully."""
    return settings.run_dir / f"processor-{store.checkpoint_lock_id(settings.checkpoint_dir)}.stop"


def request_stop(settings: Settings) -> Path:
    path = stop_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(datetime.now(tz=UTC).isoformat())
    return path


def _fix_hint(settings: Settings) -> str:
    return (
        "to re-read the topic from the start run `cinestream reset --keep-topics` (wipes the "
        "checkpoint and the windows derived from it), or point CINESTREAM_CHECKPOINT_DIR at a "
        "new location"
    )


@dataclass
class StartPlan:
    """What the processor resolved before starting: where each partition will be read from."""

    resumed_batch: int | None
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    topic_id: str | None

    @property
    def backlog(self) -> int:
        return sum(max(0, self.end_offsets[p] - o) for p, o in self.start_offsets.items())


def plan_start(settings: Settings, fs: CheckpointFS, stored: store.StoredCheckpoint) -> StartPlan:
    """Check that the checkpoint matches the topic and the store; raise if starting would skip
    or double-count ratings."""
    topic = settings.ratings_topic
    partitions = kafka_admin.partition_offsets(settings, topic)
    if not partitions:
        raise CinestreamError(
            f"topic {topic!r} does not exist on {settings.kafka_bootstrap}: create it with "
            "`cinestream topics create`"
        )
    current_id = kafka_admin.topic_id(settings, topic)
    low = {p.partition: p.low for p in partitions}
    high = {p.partition: p.high for p in partitions}
    batch, offsets = checkpoint_offsets(fs, settings.checkpoint_dir)
    if batch is None:
        if stored.batches:
            raise CheckpointMismatch(
                f"no checkpoint at {settings.checkpoint_dir}, but PostgreSQL holds "
                f"{stored.batches} batches committed from it: starting over would count "
                f"those ratings twice; {_fix_hint(settings)}"
            )
        if settings.starting_offsets == "latest":
            start = dict(high)
        else:
            start = dict(low)
        return StartPlan(None, start, high, current_id)

    ckpt = offsets.get(topic)
    if ckpt is None:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} belongs to topic(s) {sorted(offsets)}, not "
            f"{topic!r}; {_fix_hint(settings)}"
        )
    problems = []
    if stored.topic_id and current_id and stored.topic_id != current_id:
        problems.append(
            f"topic {topic!r} was deleted and recreated (id {stored.topic_id} -> {current_id})"
        )
    # Every batch is committed to PostgreSQL before Spark marks it done, so a batch Spark calls
    # done that the store lacks means its ratings are missing (store restored, tables emptied).
    done = committed_batch(fs, settings.checkpoint_dir)
    if done is not None and (stored.last_batch_id is None or stored.last_batch_id < done):
        problems.append(
            f"the checkpoint has batches up to {done} done but PostgreSQL holds "
            + (
                f"batches only up to {stored.last_batch_id}"
                if stored.last_batch_id is not None
                else "none of them"
            )
            + ", so their ratings are missing from the store"
        )
    for p, offset in sorted(ckpt.items()):
        if p not in high:
            problems.append(f"partition {p} is in the checkpoint but not in the topic")
        elif offset > high[p]:
            problems.append(
                f"partition {p}: checkpoint at offset {offset} but the topic ends at {high[p]}"
            )
        elif offset < low[p]:
            problems.append(
                f"partition {p}: offsets {offset}..{low[p] - 1} were deleted before they were "
                "processed"
            )
    if problems:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} does not match topic {topic!r}: "
            + "; ".join(problems)
            + f". Starting would skip data; {_fix_hint(settings)}"
        )
    start = {p: ckpt.get(p, low[p]) for p in high}
    return StartPlan(batch, start, high, current_id)


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
    ) -> None:
        from cinestream.checkpoint import HadoopFS

        if trigger not in ("available-now", "continuous"):
            raise CinestreamError(f"unknown trigger {trigger!r}: use available-now or continuous")
        self.spark = spark
        self.settings = settings
        self.trigger = trigger
        self.interval = interval or settings.trigger_interval
        self.max_duration_s = max_duration_s
        self.lock_wait_s = lock_wait_s
        self.max_restarts = max_restarts
        self.fs = HadoopFS(spark)
        self.url = settings.resolved_database_url
        self.lock = store.CheckpointLock(self.url, settings.checkpoint_dir)
        self._conn: psycopg.Connection[Any] | None = None
        self._producer: Any = None
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._topic_id: str | None = None
        self.totals = {"batches": 0, "valid": 0, "invalid": 0, "late": 0}

    # ---------------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        self._install_signal_handlers()
        stop_file(s).unlink(missing_ok=True)
        self._acquire_lock()
        try:
            with store.connect(self.url) as conn:
                store.ensure_schema(conn)
                stored = store.stored_checkpoint(conn, s.checkpoint_dir)
            plan = plan_start(s, self.fs, stored)
            self._topic_id = plan.topic_id
            self._log_plan(plan)
            return self._supervise()
        finally:
            self._close()
            self.lock.release()

    def _acquire_lock(self) -> None:
        deadline = time.monotonic() + self.lock_wait_s
        while not self.lock.try_acquire():
            if time.monotonic() >= deadline:
                holder = self.lock.holder() or "another session"
                raise ProcessorBusy(
                    f"another processor is running on checkpoint {self.settings.checkpoint_dir} "
                    f"(held by {holder}); let it finish, stop it with `cinestream process --stop`"
                    ", or wait with --wait-for-lock SECONDS"
                )
            time.sleep(1)
        log.info("holding the lock on checkpoint %s", self.settings.checkpoint_dir)

    def _log_plan(self, plan: StartPlan) -> None:
        s = self.settings
        offsets = ", ".join(
            f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.start_offsets.items())
        )
        ends = ", ".join(f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.end_offsets.items()))
        if plan.resumed_batch is None:
            log.info(
                "no checkpoint at %s: first run, starting from %s: %s (topic ends at %s; "
                "%d records to process)",
                s.checkpoint_dir,
                s.starting_offsets,
                offsets,
                ends,
                plan.backlog,
            )
            if s.starting_offsets == "latest":
                log.warning(
                    "starting at 'latest' skips records already in %s (%d now); set "
                    "CINESTREAM_STARTING_OFFSETS=earliest to process them",
                    s.ratings_topic,
                    sum(plan.end_offsets.values()),
                )
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
            "allowed lateness %ss; trigger %s%s",
            s.kafka_bootstrap,
            s.ratings_topic,
            plan.topic_id,
            s.metrics_topic,
            s.dlq_topic,
            s.redacted_database_url(),
            ",".join(s.window_types),
            s.allowed_lateness_s,
            self.trigger,
            f" every {self.interval}" if self.trigger == "continuous" else "",
        )

    # ---------------------------------------------------------------------------------------
    def _start_query(self) -> Any:
        s = self.settings
        reader = (
            self.spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", s.kafka_bootstrap)
            .option("subscribe", s.ratings_topic)
            .option("startingOffsets", s.starting_offsets)
            # Never skip silently: a gap in the offsets fails the query (plan_start explains).
            .option("failOnDataLoss", "true")
            .option("maxOffsetsPerTrigger", s.max_offsets_per_trigger)
            .option("includeHeaders", "false")
            .load()
        )
        writer = (
            reader.writeStream.queryName("ratings_stream_processor")
            .option("checkpointLocation", s.checkpoint_dir)
            .foreachBatch(self._process_batch)
        )
        if self.trigger == "available-now":
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=self.interval)
        return writer.start()

    def _supervise(self) -> int:
        began = time.monotonic()
        failures = 0
        while True:
            query = self._start_query()
            log.info("query %s started (run id %s)", query.id, query.runId)
            stopped = self._watch(query, began)
            error = query.exception()
            if self._fatal is not None:
                raise self._fatal
            if error is None:
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
            message = str(error.desc if hasattr(error, "desc") else error).splitlines()[0]
            failures += 1
            if stopped or self.trigger != "continuous" or failures > self.max_restarts:
                raise CinestreamError(f"streaming query failed: {message[:500]}")
            backoff = min(60, 2**failures)
            log.error(
                "query failed (%s); restarting from the checkpoint in %ds (%d/%d)",
                message[:300],
                backoff,
                failures,
                self.max_restarts,
            )
            if self._stop.wait(backoff):
                return 0

    def _watch(self, query: Any, began: float) -> bool:
        """Wait for the query; on a stop request let the running batch finish, then stop."""
        sf = stop_file(self.settings)
        while query.isActive:
            expired = self.max_duration_s is not None and (
                time.monotonic() - began >= self.max_duration_s
            )
            if sf.exists():
                log.info("stop requested through %s", sf)
                self._stop.set()
            if self._stop.is_set() or expired:
                if expired:
                    log.info("maximum duration reached; stopping")
                self._stop_gracefully(query)
                sf.unlink(missing_ok=True)
                return True
            query.awaitTermination(1)
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
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        from cinestream.spark_transforms import dlq_records, parse_ratings, window_cells

        s = self.settings
        began = time.monotonic()
        now_ms = int(time.time() * 1000)
        parsed = parse_ratings(df)
        cells = window_cells(parsed, s.windows, now_ms + s.future_tolerance_s * 1000).toArrow()
        invalid_mask = pc.is_null(cells["window_type"])
        invalid = int(pc.sum(cells.filter(invalid_mask)["n"]).as_py() or 0)
        valid_cells = cells.filter(pc.invert(invalid_mask))
        max_event = pc.max(valid_cells["max_event_ms"]).as_py() if valid_cells.num_rows else None
        spark_s = time.monotonic() - began
        if invalid:
            (
                dlq_records(parsed)
                .write.format("kafka")
                .option("kafka.bootstrap.servers", s.kafka_bootstrap)
                .option("topic", s.dlq_topic)
                .save()
            )
        sink = io.BytesIO()
        pacsv.write_csv(
            valid_cells.select(CELL_COLUMNS), sink, pacsv.WriteOptions(include_header=False)
        )
        _, offsets = checkpoint_offsets(self.fs, s.checkpoint_dir, batch_id)
        end_offsets = offsets.get(s.ratings_topic, {})

        def commit() -> store.BatchResult:
            self.lock.ensure_held()
            conn = self._connection()
            try:
                return store.commit_batch(
                    conn,
                    checkpoint=s.checkpoint_dir,
                    topic=s.ratings_topic,
                    topic_id=self._topic_id,
                    batch_id=batch_id,
                    cells_csv=sink.getvalue(),
                    invalid=invalid,
                    batch_max_event_ms=max_event,
                    allowed_lateness_ms=s.allowed_lateness_s * 1000,
                    end_offsets={str(k): v for k, v in end_offsets.items()},
                    primary_window_type=s.window_types[0],
                )
            except psycopg.OperationalError:
                self._drop_connection()
                raise

        store_began = time.monotonic()
        result = store.retry_on_disconnect(
            commit, timeout_s=s.db_retry_timeout_s, what=f"batch {batch_id}"
        )
        store_s = time.monotonic() - store_began
        keys = {
            (wt, ws)
            for wt, ws in zip(
                valid_cells["window_type"].to_pylist(),
                valid_cells["window_start_ms"].to_pylist(),
                strict=True,
            )
        }
        if result.already_committed:
            log.info(
                "batch %d was already committed (replay after a restart); re-publishing "
                "its %d windows",
                batch_id,
                len(keys),
            )
            rows = store.retry_on_disconnect(
                lambda: store.metrics_for_keys(self._connection(), keys),
                timeout_s=s.db_retry_timeout_s,
                what=f"batch {batch_id}",
            )
        else:
            rows = [m.as_row() for m in result.metrics]
        self._publish(rows)
        if not result.already_committed:
            self.totals["batches"] += 1
            self.totals["valid"] += result.valid
            self.totals["invalid"] += result.invalid
            self.totals["late"] += result.late
        log.info(
            "batch %d: %d valid, %d invalid -> %s, %d late; %d windows updated; watermark %s; "
            "end offsets %s; %.2fs (spark %.2fs, store %.2fs, %d cells)",
            batch_id,
            result.valid,
            invalid,
            s.dlq_topic,
            result.late,
            len(rows),
            format_time(result.watermark_ms) if result.watermark_ms else "-",
            json.dumps(end_offsets, sort_keys=True),
            time.monotonic() - began,
            spark_s,
            store_s,
            valid_cells.num_rows,
        )

    def _publish(self, rows: list[dict[str, Any]]) -> None:
        if self._producer is None:
            from confluent_kafka import Producer

            from cinestream.generator import producer_config

            self._producer = Producer(producer_config(self.settings.kafka_bootstrap))
        _publish_metrics(self.settings, rows, self._producer)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Autocommit: a read between batches must not leave a transaction open, or the next
            # batch's transaction would become a savepoint inside it and never commit.
            self._conn = store.connect(self.url, autocommit=True)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _close(self) -> None:
        self._drop_connection()
        if self._producer is not None:
            self._producer.flush(10)


def _publish_metrics(settings: Settings, rows: list[dict[str, Any]], producer: Any = None) -> None:
    """Publish metric records keyed ``<window_type>|<window_start>``; raise if any is lost."""
    if not rows:
        return
    from confluent_kafka import Producer

    from cinestream.generator import producer_config

    producer = producer or Producer(producer_config(settings.kafka_bootstrap))
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    for row in rows:
        producer.produce(
            settings.metrics_topic,
            json.dumps(metric_record(row), separators=(",", ":")).encode(),
            metric_key(row["window_type"], row["window_start"]).encode(),
            on_delivery=on_delivery,
        )
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or failures:
        raise ServiceUnavailable(
            f"could not publish {remaining + len(failures)} metrics to {settings.metrics_topic} "
            f"({failures[:1] or 'timeout'}); the windows are stored and are re-published when "
            "the batch is replayed"
        )
