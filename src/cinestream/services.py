"""Orchestration of the local stack for `up`, `down`, `status` and `reset`."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from cinestream import kafka_admin, store
from cinestream.errors import CinestreamError
from cinestream.local_stack import LocalKafka, LocalPostgres, ManagedProcess, jars, port_open
from cinestream.settings import Settings

log = logging.getLogger("cinestream.services")


def _cinestream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cinestream.cli", *args]


def start_infra(settings: Settings) -> None:
    """PostgreSQL (unless external), Kafka, topics and the schema."""
    jars("spark")  # resolve the connector now rather than in the middle of the first run
    LocalPostgres(settings).start()
    if settings.kafka_bootstrap.startswith(("127.0.0.1:", "localhost:")):
        LocalKafka(settings).start()
    created = kafka_admin.create_topics(settings)
    if created:
        log.info("created topics %s", ", ".join(created))
    with store.connect(settings.resolved_database_url) as conn:
        store.ensure_schema(conn)


def up(
    settings: Settings,
    *,
    backlog: int,
    backlog_span_s: float | None,
    live_rate: float,
    with_airflow: bool = True,
) -> None:
    import subprocess

    from cinestream.sparkrun import spark_env

    start_infra(settings)
    start_serving(settings)
    parts = kafka_admin.partition_offsets(settings, settings.ratings_topic)
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
        if result.returncode not in (0, 75):
            raise CinestreamError(
                "the backlog run failed (see above); `cinestream doctor` explains the state"
            )
    if with_airflow:
        start_airflow(settings)
        trigger_pipeline(settings)
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
    from pathlib import Path

    app = Path(__file__).parent / "dashboard" / "app.py"
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


AIRFLOW_COMPONENTS = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)


def airflow_cli(settings: Settings, *args: str, check: bool = True) -> Any:
    import subprocess
    from pathlib import Path

    from cinestream.airflow_env import airflow_env

    airflow = str(Path(sys.executable).parent / "airflow")
    return subprocess.run(
        [airflow, *args],
        env={**os.environ, **airflow_env(settings)},
        check=check,
        capture_output=True,
        text=True,
    )


def start_airflow(settings: Settings) -> None:
    """Airflow 3 on the local PostgreSQL: migrate, then the four components, LocalExecutor."""
    from pathlib import Path

    from cinestream.airflow_env import airflow_env

    if all(ManagedProcess(name, settings).pid() for name in AIRFLOW_COMPONENTS):
        return
    log.info("migrating Airflow's metadata database")
    result = airflow_cli(settings, "db", "migrate", check=False)
    if result.returncode:
        raise CinestreamError(f"airflow db migrate failed: {result.stderr.strip()[-500:]}")
    airflow = str(Path(sys.executable).parent / "airflow")
    env = airflow_env(settings)
    for name in AIRFLOW_COMPONENTS:
        proc = ManagedProcess(name, settings)
        if proc.pid() is None:
            proc.start([airflow, name.removeprefix("airflow-")], env=env)
            log.info("started %s, log %s", name, proc.log_file)
    deadline = time.monotonic() + 180
    while not port_open("127.0.0.1", settings.airflow_port):
        if time.monotonic() > deadline:
            raise CinestreamError(
                f"the Airflow api-server did not open port "
                f"{settings.airflow_port}; see {settings.log_dir}"
            )
        time.sleep(1)


def trigger_pipeline(settings: Settings) -> None:
    """Trigger cinestream_pipeline once (when the DAG processor has parsed it)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        listed = airflow_cli(settings, "dags", "list", "-o", "plain", check=False)
        if "cinestream_pipeline" in listed.stdout:
            break
        time.sleep(5)
    airflow_cli(settings, "dags", "unpause", "cinestream_pipeline", check=False)
    result = airflow_cli(settings, "dags", "trigger", "cinestream_pipeline", check=False)
    if result.returncode == 0:
        log.info("triggered cinestream_pipeline once")
    else:
        log.warning("could not trigger cinestream_pipeline: %s", result.stderr.strip()[-300:])


def stop_processor(settings: Settings, timeout_s: float = 120) -> bool:
    """Ask the processor on the checkpoint to stop between batches and wait for it."""
    from cinestream.processor import request_stop, stop_file

    lock = store.CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir)
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
    for name in (*AIRFLOW_COMPONENTS, "dashboard", "api", "generator"):
        yield name, ManagedProcess(name, settings).stop()
    yield (
        "processor",
        stop_processor(settings)
        if _postgres_up(settings)
        else ManagedProcess("processor", settings).stop(),
    )
    yield "kafka", LocalKafka(settings).stop()
    yield "postgres", LocalPostgres(settings).stop()


def _postgres_up(settings: Settings) -> bool:
    try:
        store.connect(settings.resolved_database_url, timeout=2).close()
        return True
    except CinestreamError:
        return False


def reset(settings: Settings, *, keep_topics: bool) -> Iterator[str]:
    from cinestream.checkpoint import delete_local_checkpoint

    if stop_processor(settings):
        yield "stopped the processor"
    generator = ManagedProcess("generator", settings)
    if generator.stop():
        yield "stopped the live generator"
    if not keep_topics:
        deleted = kafka_admin.delete_topics(settings)
        yield f"deleted topics: {', '.join(deleted) or 'none'} (waited until gone)"
        created = kafka_admin.create_topics(settings)
        yield f"created topics: {', '.join(created)}"
    yield (
        "deleted checkpoint "
        if delete_local_checkpoint(settings.checkpoint_dir)
        else "no checkpoint at "
    ) + settings.checkpoint_dir
    with store.connect(settings.resolved_database_url) as conn:
        store.ensure_schema(conn)
        store.truncate_all(conn)
    yield "emptied window_metrics and the window store"


def _service_state(settings: Settings) -> dict[str, str]:
    states: dict[str, str] = {}
    states["kafka"] = "running" if kafka_admin.broker_ready(settings) else "stopped"
    states["postgres"] = "running" if _postgres_up(settings) else "stopped"
    for name in ("processor", "generator"):
        pid = ManagedProcess(name, settings).pid()
        states[name] = f"running (pid {pid})" if pid else "stopped"
    if states["postgres"] == "running" and states["processor"] == "stopped":
        holder = store.CheckpointLock(
            settings.resolved_database_url, settings.checkpoint_dir
        ).holder()
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
    from cinestream.airflow_env import admin_password

    return admin_password(settings) or "in .state/airflow/simple_auth_manager_passwords.json"


def where_to_look(settings: Settings) -> str:
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
