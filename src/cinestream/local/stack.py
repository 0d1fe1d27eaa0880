"""The local stack as a whole: `up`, `down`, `status` and `reset`."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cinestream.errors import EXIT_PROCESSOR_BUSY, CinestreamError
from cinestream.jars import jars
from cinestream.kafka import admin
from cinestream.local import airflow
from cinestream.local.kafka import LocalKafka
from cinestream.local.postgres import LocalPostgres
from cinestream.local.processes import ManagedProcess, prune_logs
from cinestream.net import port_open
from cinestream.settings import Settings
from cinestream.store import schema
from cinestream.store.checkpoints import CheckpointLock
from cinestream.store.connection import connect, reachable
from cinestream.stream.checkpoint import delete_local_checkpoint
from cinestream.stream.start_plan import request_stop, stop_file
from cinestream.stream.submit import spark_env

log = logging.getLogger("cinestream.stack")


def _cinestream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cinestream.cli", *args]


def start_infra(settings: Settings) -> None:
    """PostgreSQL (unless external), Kafka, topics and the schema."""
    jars("spark")  # resolve the connector now rather than in the middle of the first run
    LocalPostgres(settings).start()
    if settings.kafka_bootstrap.startswith(("127.0.0.1:", "localhost:")):
        LocalKafka(settings).start()
    created = admin.create_topics(settings)
    if created:
        log.info("created topics %s", ", ".join(created))
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)


def up(
    settings: Settings,
    *,
    backlog: int,
    backlog_span_s: float | None,
    live_rate: float,
    with_airflow: bool = True,
) -> None:
    """Start everything, replay a first backlog, then keep the pipeline live."""
    pruned = prune_logs(settings)
    if pruned:
        log.info("deleted %d log files older than %s", pruned, settings.retention)
    start_infra(settings)
    start_serving(settings)
    parts = admin.partition_offsets(settings, settings.ratings_topic)
    if backlog and sum(p.messages for p in parts) == 0:
        span = backlog_span_s or 2400
        start = datetime.fromtimestamp(time.time() - span, tz=UTC)
        log.info(
            "empty topic: replaying a historical backlog of %d ratings over the last %.0f "
            "minutes (the seed's option A)",
            backlog,
            span / 60,
        )
        subprocess.run(
            _cinestream_cmd(
                "generate",
                "--count",
                str(backlog),
                "--start",
                start.isoformat(),
                "--span",
                f"{span}s",
                "--no-progress",
            ),
            check=True,
        )
    processor = ManagedProcess("processor", settings)
    if processor.pid() is None:
        log.info("draining the backlog with an available-now run")
        result = subprocess.run(
            _cinestream_cmd("process", "--trigger", "available-now", "--wait-for-lock", "30"),
            env=spark_env(),
        )
        if result.returncode not in (0, EXIT_PROCESSOR_BUSY):
            raise CinestreamError(
                "the backlog run failed (see above); `cinestream doctor` explains the state"
            )
    if with_airflow:
        airflow.start_airflow(settings)
        airflow.trigger_pipeline(settings)
    if live_rate <= 0:
        return
    generator = ManagedProcess("generator", settings)
    if generator.pid() is None:
        generator.start(
            _cinestream_cmd(
                "generate",
                "--duration",
                "3650d",
                "--rate",
                str(live_rate),
                "--seed",
                str(int(time.time())),
                "--no-progress",
            )
        )
        log.info("live generator: %s ratings/s, log %s", live_rate, generator.log_file)
    if processor.pid() is None:
        processor.start(
            _cinestream_cmd(
                "process", "--trigger", "continuous", "--interval", "10s", "--wait-for-lock", "60"
            ),
            env=spark_env(),
        )
        log.info("live processor: continuous, every 10s, log %s", processor.log_file)


def dashboard_command(settings: Settings, port: int | None = None) -> list[str]:
    """``streamlit run`` of the dashboard app on 127.0.0.1."""
    app = Path(__file__).parents[1] / "dashboard" / "app.py"
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port or settings.dashboard_port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def start_serving(settings: Settings) -> None:
    """The API and the dashboard as background processes (idempotent)."""
    api = ManagedProcess("api", settings)
    if api.pid() is None and not port_open("127.0.0.1", settings.api_port):
        api.start(_cinestream_cmd("api"))
        log.info(
            "API on %s (OpenAPI at %s/docs), log %s",
            settings.api_url,
            settings.api_url,
            api.log_file,
        )
    dashboard = ManagedProcess("dashboard", settings)
    if dashboard.pid() is None and not port_open("127.0.0.1", settings.dashboard_port):
        dashboard.start(dashboard_command(settings))
        log.info("dashboard on %s, log %s", settings.dashboard_url, dashboard.log_file)


def stop_processor(settings: Settings, timeout_s: float = 120) -> bool:
    """Ask the processor on the checkpoint to stop between batches and wait for it."""
    lock = CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir)
    try:
        running = lock.holder() is not None
    except CinestreamError:
        running = False
    managed = ManagedProcess("processor", settings)
    if not running and managed.pid() is None:
        return False
    request_stop(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if lock.holder() is None and managed.pid() is None:
                break
        except CinestreamError:
            break
        time.sleep(0.5)
    else:
        log.warning("processor did not stop within %.0fs; terminating it", timeout_s)
    managed.stop(timeout_s=30)
    stop_file(settings).unlink(missing_ok=True)
    return True


def down(settings: Settings) -> Iterator[tuple[str, bool]]:
    """Stop every part, the processor between batches; yields (name, was running)."""
    for name in (*airflow.COMPONENTS, "dashboard", "api", "generator"):
        yield name, ManagedProcess(name, settings).stop()
    yield (
        "processor",
        stop_processor(settings)
        if reachable(settings.resolved_database_url)
        else ManagedProcess("processor", settings).stop(),
    )
    yield "kafka", LocalKafka(settings).stop()
    yield "postgres", LocalPostgres(settings).stop()


def reset(settings: Settings, *, keep_topics: bool) -> Iterator[str]:
    """The full restart (or, with ``keep_topics``, a re-read); yields each step done."""
    if stop_processor(settings):
        yield "stopped the processor"
    generator = ManagedProcess("generator", settings)
    if generator.stop():
        yield "stopped the live generator"
    if not keep_topics:
        deleted = admin.delete_topics(settings)
        yield f"deleted topics: {', '.join(deleted) or 'none'} (waited until gone)"
        created = admin.create_topics(settings)
        yield f"created topics: {', '.join(created)}"
    yield (
        "deleted checkpoint "
        if delete_local_checkpoint(settings.checkpoint_dir)
        else "no checkpoint at "
    ) + settings.checkpoint_dir
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        schema.truncate_all(conn)
    yield "emptied window_metrics and the window store"


def _service_state(settings: Settings) -> dict[str, str]:
    states: dict[str, str] = {}
    states["kafka"] = "running" if admin.broker_ready(settings) else "stopped"
    states["postgres"] = "running" if reachable(settings.resolved_database_url) else "stopped"
    for name in ("processor", "generator"):
        pid = ManagedProcess(name, settings).pid()
        states[name] = f"running (pid {pid})" if pid else "stopped"
    if states["postgres"] == "running" and states["processor"] == "stopped":
        holder = CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir).holder()
        if holder:
            states["processor"] = f"running elsewhere ({holder})"
    for name, port in (
        ("api", settings.api_port),
        ("dashboard", settings.dashboard_port),
        ("airflow", settings.airflow_port),
    ):
        states[name] = "running" if port_open("127.0.0.1", port) else "stopped"
    return states


def status(settings: Settings) -> dict[str, Any]:
    """Where each service is and whether it runs (``cinestream status --json``)."""
    return {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "database_url": settings.resolved_database_url,
        "database_url_redacted": settings.redacted_database_url(),
        "api_url": settings.api_url,
        "dashboard_url": settings.dashboard_url,
        "airflow_url": settings.airflow_url,
        "checkpoint_dir": settings.checkpoint_dir,
        "state_dir": str(settings.state_dir),
        "services": _service_state(settings),
    }


def _admin_password(settings: Settings) -> str:
    return (
        airflow.admin_password(settings) or "in .state/airflow/simple_auth_manager_passwords.json"
    )


def where_to_look(settings: Settings) -> str:
    """What `up` prints: every service, its URL, and the commands to look further."""
    return "\n".join(
        [
            "",
            "cinestream is up.",
            f"  Kafka       {settings.kafka_bootstrap}  (topics {settings.ratings_topic}, "
            f"{settings.metrics_topic}, {settings.dlq_topic})",
            f"  PostgreSQL  {settings.redacted_database_url()}  (table window_metrics)",
            f"  API         {settings.api_url}  (OpenAPI at {settings.api_url}/docs)",
            f"  dashboard   {settings.dashboard_url}",
            f"  Airflow     {settings.airflow_url}  (user admin, password "
            f"{_admin_password(settings)})",
            f"  logs        {settings.log_dir}",
            "  cinestream status      services and URLs",
            "  cinestream doctor      offsets, lag, windows; what to fix",
            "  cinestream topics list",
            "  make down              stop everything",
        ]
    )
