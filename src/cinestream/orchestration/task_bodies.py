"""Task bodies of the Airflow DAGs: each DAG task is one call into this module.

Airflow reaches Kafka through its connection (``kafka_default``) and the metrics database through
``cinestream_metrics_db``; everything else comes from the one
:class:`~cinestream.settings.Settings` object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import psycopg

from cinestream.errors import CheckpointMismatch, CinestreamError, ServiceUnavailable
from cinestream.kafka import admin
from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import reads, schema
from cinestream.store.checkpoint_lock import CheckpointLock, stored_checkpoint
from cinestream.store.connection import connect

log = logging.getLogger("cinestream.orchestration")

WINDOW_METRICS_ASSET = "cinestream://metrics/window_metrics"
METRICS_DB_CONN_ID = "cinestream_metrics_db"
# The generators' Kafka connection: the generator principal (kafka_default is the admin's).
GENERATOR_CONN_ID = "cinestream_kafka_generator"


class _Deliveries:
    """The generator task's delivered and failed ratings. The Kafka provider's operator calls
    :func:`on_delivery` by its dotted name (no instance to hold a count), so the count lives
    here; each Airflow task runs in a process of its own, and :func:`rating_messages` starts it
    at zero."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.first_error = ""


DELIVERIES = _Deliveries()


def metrics_db_url(conn_id: str = METRICS_DB_CONN_ID) -> str:
    """The libpq URL of the metrics database, from its Airflow connection."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    auth = quote(conn.login or "", safe="")
    if conn.password:
        auth += ":" + quote(conn.password, safe="")
    return f"postgresql://{auth}@{conn.host}:{conn.port or 5432}/{conn.schema or ''}"


def task_settings(conn_id: str = METRICS_DB_CONN_ID, kafka_role: str = "admin") -> Settings:
    """The Settings of a task: ``CINESTREAM_*`` as everywhere, the database from Airflow, Kafka
    as ``kafka_role``'s principal (kafka/acls.py)."""
    return Settings(database_url=metrics_db_url(conn_id)).for_kafka_role(kafka_role)


def _admin(kafka_conn_id: str) -> Any:
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    return KafkaAdminClientHook(kafka_config_id=kafka_conn_id).get_conn


def check_broker(kafka_conn_id: str = "kafka_default") -> dict[str, Any]:
    """Fail unless the broker of the connection answers; return what it lists."""
    from confluent_kafka import KafkaException

    try:
        metadata = _admin(kafka_conn_id).list_topics(timeout=10)
    except KafkaException as exc:
        raise CinestreamError(f"Kafka connection {kafka_conn_id!r} does not answer: {exc}") from exc
    info = {"brokers": len(metadata.brokers), "topics": sorted(metadata.topics)}
    log.info("broker reachable through %s: %s", kafka_conn_id, info)
    return info


def create_topics(kafka_conn_id: str = "kafka_default") -> list[str]:
    """Create the missing topics and the principals' ACLs (where the principals are cinestream's
    own) through the Kafka connection (the admin's); log each topic's layout."""
    from cinestream.kafka import acls

    settings = Settings()
    client = _admin(kafka_conn_id)
    if acls.managed(settings):
        acls.ensure_acls(settings, admin=client)
    created = admin.create_topics(settings, admin=client)
    for spec in admin.topic_specs(settings):
        log.info(
            "topic %s: %d partitions, config %s (%s)",
            spec.name,
            spec.partitions,
            spec.config or "{}",
            "created" if spec.name in created else "exists",
        )
    return created


def clear_checkpoint(clear: bool) -> str:
    """Delete the processor checkpoint and the windows derived from it (only when asked)."""
    if not clear:
        return "kept"
    from cinestream.reset import reset

    settings = task_settings()
    for step in reset(settings, keep_topics=True):
        log.info("%s", step)
    return "cleared"


def preflight() -> str:
    """Fail with doctor's explanation when the processor would skip or double-count data."""

    return preflight_for(task_settings(kafka_role="processor"))


def preflight_for(settings: Settings) -> str:
    """:func:`preflight` for ``settings``: the plan's summary, or why it was left to the
    running processor."""
    from cinestream.stream.checkpoint import checkpoint_fs
    from cinestream.stream.start_plan import plan_start, unfinished_note

    holder = CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir).holder()
    if holder is not None:
        # The running processor moves the checkpoint under us (every second or so; a read on
        # HDFS takes seconds) and compares it with the store itself, under its lock, at every
        # commit; the processor this run starts plans again once it holds the lock.
        message = f"checkpoint held by the running processor ({holder}): it checks it"
        log.info("preflight: %s", message)
        return message
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        stored = stored_checkpoint(conn, settings.checkpoint_dir)
    try:
        # file:// read in Python; hdfs:// (the cluster profile) through Hadoop's FileSystem.
        with checkpoint_fs(settings.checkpoint_dir) as fs:
            plan = plan_start(settings, fs, stored)
    except CheckpointMismatch as exc:
        raise CinestreamError(f"preflight failed (cinestream doctor says): {exc}") from exc
    if plan.skipped_by_latest:
        raise CinestreamError(f"preflight failed: {plan.latest_warning(settings.ratings_topic)}")
    message = (
        f"processor will start at {plan.start_offsets} "
        f"({'resume' if plan.resumed_batch is not None else 'first run'}), "
        f"{plan.backlog} records to process"
    )
    if plan.unfinished_batch is not None:
        message += f"; {unfinished_note(plan.unfinished_batch)}"
    log.info("preflight OK: %s", message)
    return message


def rating_messages(
    count: int | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    users: int = 5_000,
    movies: int = 10_000,
    seed: int | None = 42,
    start: str | None = None,
    span_s: float | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) ratings for ProduceToTopicOperator, from the latent-factor model."""
    from cinestream.generator import LatentFactorModel, ModelParams, encode, rating_batches
    from cinestream.timeparse import parse_instant

    if seed is None or seed == "":
        seed = int(time.time())
        log.info("no seed given: using %d", seed)
    model = LatentFactorModel(ModelParams(users=int(users), movies=int(movies), seed=int(seed)))
    began = time.monotonic()
    sent = 0
    DELIVERIES.ok = DELIVERIES.failed = 0
    DELIVERIES.first_error = ""
    try:
        batches = rating_batches(
            model,
            count=int(count) if count else None,
            duration_s=float(duration_s) if duration_s else None,
            rate=float(rate) if rate else None,
            start_ms=int(parse_instant(start).timestamp() * 1000) if start else None,
            span_ms=int(float(span_s) * 1000) if span_s else None,
        )
        for users_, movies_, ratings, times in batches:
            for key, value, _ts in encode(users_, movies_, ratings, times):
                yield key, value
            sent += len(users_)
            if sent % 50_000 < len(users_):
                log.info("produced %d ratings (%d delivered so far)", sent, DELIVERIES.ok)
    except ValueError as exc:
        raise CinestreamError(str(exc)) from exc
    log.info("produced %d ratings in %.1fs", sent, time.monotonic() - began)


def on_delivery(err: Any, _msg: Any) -> None:
    """Delivery callback: count, and log only failures (no INFO line per message)."""
    if err is None:
        DELIVERIES.ok += 1
        return
    DELIVERIES.failed += 1
    if DELIVERIES.failed <= 10:
        from cinestream.kafka import acls

        generator = {"sasl.username": acls.principal_user("generator")}
        line = acls.refused_line(generator, err, "WRITE", "topic", Settings().ratings_topic)
        DELIVERIES.first_error = DELIVERIES.first_error or line or str(err)
        log.error("delivery failed: %s", line or err)


def check_deliveries() -> None:
    """After the generator task's last flush: fail it when any rating was not delivered (a
    refused principal, a topic gone), instead of a success that wrote nothing."""
    if DELIVERIES.failed:
        raise CinestreamError(
            f"{DELIVERIES.failed:,} of {DELIVERIES.ok + DELIVERIES.failed:,} ratings were not "
            f"delivered: {DELIVERIES.first_error}"
        )


def reset_all(confirm: str) -> list[str]:
    """The seed's full restart, guarded: ``confirm`` must be ``RESET``."""
    if confirm != "RESET":
        raise CinestreamError("refusing to reset: set the Param confirm to RESET")
    from cinestream.reset import reset

    steps = list(reset(task_settings(), keep_topics=False))
    for step in steps:
        log.info("%s", step)
    return steps


def spark_job_kwargs(script: str, args: list[str]) -> dict[str, Any]:
    """SparkSubmitOperator arguments for a job in spark_jobs/ (same conf as the CLI)."""
    from cinestream.stream.submit import (
        connector_jars,
        job_env,
        job_path,
        spark_conf,
        spark_properties_file,
    )

    settings = Settings()
    properties = spark_properties_file(settings)
    return {
        # The local standalone cluster's spark.authenticate secret (never in argv).
        **({"properties_file": str(properties)} if properties else {}),
        "application": str(job_path(script)),
        "application_args": args,
        "conf": spark_conf(settings),
        "jars": connector_jars(),
        "driver_memory": settings.spark_driver_memory,
        "name": script.removesuffix(".py"),
        "env_vars": job_env(),
    }


def store_clock(database_url: str) -> datetime | None:
    """The database's clock before a job runs, to tell afterwards which windows it changed.

    ``None`` (logged) when the database cannot be asked: the job still runs, its asset event then
    names no range and the quality DAG validates every window.
    """
    try:
        with connect(database_url) as conn:
            return reads.database_clock(conn)
    except (ServiceUnavailable, psycopg.Error) as exc:
        log.warning("cannot read the database clock (%s); the asset event will name no range", exc)
        return None


def windows_changed_since(database_url: str, since: datetime | None) -> dict[str, Any]:
    """What stream and backfill runs attach to their ``window_metrics`` asset event: how many
    windows they changed and the event-time range those windows span."""
    if since is None:
        return {}
    try:
        with connect(database_url) as conn:
            changed = reads.windows_changed_since(conn, since)
    except (ServiceUnavailable, psycopg.Error) as exc:
        log.warning("cannot tell which windows changed (%s); the asset event names no range", exc)
        return {}
    extra: dict[str, Any] = {"windows_changed": changed.count, "since": since.isoformat()}
    if changed.count and changed.first_start_ms is not None and changed.last_end_ms is not None:
        extra |= {
            "from": format_time(changed.first_start_ms),
            "to": format_time(changed.last_end_ms),
        }
    log.info("windows changed since %s: %s", since.isoformat(), extra)
    return extra


def quality_range(extras: Iterable[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """The window range a quality run validates: the triggering events' ranges together.

    Every window when any event does not name a range (a manual run, no database clock) or when
    no event changed a window (validating nothing would pass vacuously).
    """
    ranges = []
    for extra in extras:
        if "windows_changed" not in extra:
            return None, None
        if extra["windows_changed"]:
            ranges.append((extra["from"], extra["to"]))
    if not ranges:
        return None, None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def run_quality_for_events(triggering_asset_events: Mapping[Any, Sequence[Any]] | None) -> Any:
    """The quality DAG's task: validate the windows the triggering stream/backfill runs changed."""
    extras = [e.extra or {} for events in (triggering_asset_events or {}).values() for e in events]
    start, end = quality_range(extras)
    log.info(
        "validating windows %s",
        f"from {start} to {end} ({len(extras)} asset events)" if start else "(all of them)",
    )
    return run_quality(start, end)


def run_quality(start: str | None = None, end: str | None = None) -> dict[str, Any]:
    """Run the GX suites; a failed expectation fails the task with every failure logged."""
    from cinestream.quality import validate
    from cinestream.timeparse import parse_instant

    report = validate(
        task_settings(kafka_role="auditor"),
        parse_instant(start) if start else None,
        parse_instant(end) if end else None,
    )
    record_quality_history(report, start, end)
    if not report.success:
        raise CinestreamError(
            "data quality failed: " + "; ".join(f.line() for f in report.failures[:10])
        )
    if report.nothing_checked:
        # Only windows ahead of the wall clock changed (a producer's clock): nothing to judge
        # yet; doctor and /metrics/summary report them.
        log.warning("%s", report.lines()[0])
    return {"suites": report.suites, "docs": str(report.docs_index), "checked": report.checked}


def record_quality_history(report: Any, start: str | None, end: str | None) -> None:
    """Each suite's result of this run in ``quality_runs`` (the quality view's 24-hour strips);
    a failure to record is logged, never the task's failure."""
    from cinestream.store import reports

    try:
        from airflow.sdk import get_current_context

        run = get_current_context()["dag_run"]
        source = f"{run.dag_id}/{run.run_id}"
    except Exception:  # noqa: BLE001 - outside a task (a test calling the body): no run id
        source = "cinestream_quality"
    failures: dict[str, list[dict[str, Any]]] = {}
    for f in report.failures:
        failures.setdefault(f.suite, []).append(
            {"expectation": f.expectation, "column": f.column, "observed": str(f.observed)}
        )
    try:
        with connect(task_settings().resolved_database_url) as conn:
            schema.ensure_schema(conn)
            reports.record_quality(conn, source, report.suites, failures, start, end)
    except (ServiceUnavailable, psycopg.Error) as exc:
        log.warning("could not record the suites' results for the quality view: %s", exc)


def ratings_end_offsets() -> dict[int, int]:
    """The end offset of each partition of ``ratings`` now (what a run has to process)."""
    settings = Settings().for_kafka_role("processor")
    return {p.partition: p.high for p in admin.partition_offsets(settings, settings.ratings_topic)}


def wait_for_checkpoint_holder(
    database_url: str, topic_end: Mapping[int, int] | None, timeout_s: float, poll_s: float = 5
) -> dict[str, int]:
    """Wait until the processor holding the checkpoint has committed through ``topic_end``.

    A pipeline run whose stream step finds the live processor on the checkpoint has its work
    done by that processor: this waits for it (progress logged), and fails with what is missing
    when it does not get there within ``timeout_s``.
    """
    settings = Settings(database_url=database_url)
    wanted = {str(p): int(o) for p, o in (topic_end or {}).items()}
    log.info(
        "another processor holds checkpoint %s; waiting until it has committed through %s",
        settings.checkpoint_dir,
        wanted,
    )
    deadline = time.monotonic() + timeout_s
    behind: dict[str, int] = dict(wanted)
    while True:
        with connect(database_url) as conn:
            totals = reads.processor_totals(conn, settings.checkpoint_dir)
        committed = totals.end_offsets if totals else {}
        behind = {p: o - committed.get(p, 0) for p, o in wanted.items() if committed.get(p, 0) < o}
        if not behind:
            log.info("the processor on the checkpoint has committed through %s", committed)
            return committed
        if time.monotonic() >= deadline:
            raise CinestreamError(
                f"the processor holding checkpoint {settings.checkpoint_dir} did not commit "
                f"through {wanted} within {timeout_s:.0f}s (records behind per partition: "
                f"{behind}); see `cinestream doctor`"
            )
        log.info("waiting for the processor: %d records to go", sum(behind.values()))
        time.sleep(poll_s)


PIPELINE_DAG_ID = "cinestream_pipeline"


def no_pipeline_run_active(ti: Any) -> bool:
    """True when no cinestream_pipeline run is queued or running (the live generator's gate)."""
    active = ti.get_dr_count(dag_id=PIPELINE_DAG_ID, states=["queued", "running"])
    if active:
        log.info(
            "%d %s run(s) queued or running: live generation waits until its backlog is processed",
            active,
            PIPELINE_DAG_ID,
        )
    return not active
