"""The local stack as a whole: `up` and `down`, and the local processes a reset stops first
(`status` is :mod:`cinestream.local.status`; the reset itself :mod:`cinestream.reset`)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cinestream import reset as starting_over
from cinestream.errors import CinestreamError
from cinestream.jars import jars
from cinestream.kafka import acls, admin
from cinestream.local import airflow, modes
from cinestream.local.hdfs import LocalHDFS
from cinestream.local.kafka_nodes import LocalKafka
from cinestream.local.postgres import LocalPostgres, server_gid
from cinestream.local.processes import (
    ManagedProcess,
    descendants,
    kill_processes,
    pid_alive,
    processes_with_env,
    prune_logs,
)
from cinestream.local.secrets import first_start_time, private_dir, written_once
from cinestream.local.spark import LocalSpark
from cinestream.net import port_open
from cinestream.reset import request_processor_stop
from cinestream.settings import Settings
from cinestream.store import schema
from cinestream.store.connection import connect, reachable

log = logging.getLogger("cinestream.stack")


def _cinestream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cinestream.cli", *args]


PROFILE_FILE = "profile"


def choose_profile(state_dir: Path, cluster: bool) -> str:
    """The profile `up` starts: the one recorded in the state dir, or the one asked for (then
    recorded). A state dir holding one profile's data is never started as the other."""
    path = state_dir / PROFILE_FILE
    recorded = path.read_text().strip() if path.exists() else None
    if recorded is None and (state_dir / "kafka").exists():
        recorded = "single"  # a state dir from before profiles were recorded
    if cluster and recorded == "single":
        raise CinestreamError(
            f"{state_dir} holds a single-node stack; for the cluster profile use another state "
            f"dir (CINESTREAM_STATE_DIR={state_dir}-cluster make up-cluster) or drop this one "
            f"(make down && rm -rf {state_dir})"
        )
    profile = recorded or ("cluster" if cluster else "single")
    if recorded is None:
        written_once(path, lambda: profile)
    elif recorded == "cluster" and not cluster:
        log.info(
            "%s holds the cluster profile (recorded by `up --cluster`): starting it; for a "
            "single-node stack use another CINESTREAM_STATE_DIR",
            state_dir,
        )
    return profile


def secure_state_dir(settings: Settings) -> list[modes.Loose]:
    """Make the state dir and everything in it holding a secret, a password or logs its owner's
    only (an older cinestream left them 0755/0644); logs each path it changed. A PostgreSQL
    server running as another user keeps its way through (the state dir and logs/ 0710)."""
    private_dir(settings.state_dir)
    LocalPostgres(settings).let_server_through()
    tightened = modes.tighten(settings.state_dir, server_gid(settings))
    for loose in tightened[: modes.SHOWN]:
        log.info("made private %s", loose)
    if len(tightened) > modes.SHOWN:
        log.info(
            "made private %d more paths under %s",
            len(tightened) - modes.SHOWN,
            settings.state_dir,
        )
    return tightened


def start_infra(settings: Settings) -> None:
    """PostgreSQL (unless external), Kafka, topics and the schema; in the cluster profile
    three brokers, the Spark standalone master and workers, and the HDFS NameNode and DataNode
    that hold the checkpoints."""
    jars("spark")  # resolve the connector now rather than in the middle of the first run
    hdfs = LocalHDFS(settings) if settings.uses_local_hdfs else None
    if hdfs is not None:
        # Launched first and waited for last: the two JVMs start while Kafka and Spark do.
        hdfs.launch()
    LocalPostgres(settings).start()
    kafka = LocalKafka(settings) if settings.uses_local_kafka else None
    if kafka is not None:
        # The nodes elect their controller and register their brokers while Spark starts.
        for node in kafka.nodes:
            kafka.start_node(node)
    if settings.cluster and settings.uses_local_spark_cluster:
        LocalSpark(settings).start()
    if kafka is not None:
        kafka.wait_ready()
    if hdfs is not None:
        hdfs.wait_ready()
        log.info(
            "HDFS %s (NameNode UI %s): checkpoints in %s",
            hdfs.url,
            hdfs.ui_url(hdfs.namenode),
            settings.checkpoint_dir,
        )
    # Users and ACLs before the topics: the parts started next connect as their own principals.
    acls.provision(settings)
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
    wait_s: float = 900,
) -> None:
    """Start everything; Airflow then runs the platform: a first cinestream_pipeline run makes
    the backlog (setup -> generate -> stream -> quality), cinestream_stream keeps the processor
    running, cinestream_generate the live generator (CINESTREAM_LIVE_RATE ratings/s).

    Everything it and the servers it starts create is its owner's only (umask 077)."""
    secure_state_dir(settings)
    with modes.owner_only_umask():
        _up(settings, backlog=backlog, backlog_span_s=backlog_span_s, wait_s=wait_s)


def _up(settings: Settings, *, backlog: int, backlog_span_s: float | None, wait_s: float) -> None:
    pruned = prune_logs(settings)
    if pruned:
        log.info("deleted %d log files older than %s", pruned, settings.retention)
    start_infra(settings)
    start_serving(settings)
    first = first_start_time(settings)
    log.info(
        "stack first started %s: cinestream_backfill catches up from %s before it",
        first.isoformat(),
        settings.backfill_catchup,
    )
    # Everything but the scheduler first: the backlog run is queued before any live DAG runs,
    # so the live generator's gate sees it and waits.
    restarting = not any(ManagedProcess(c, settings).pid() for c in airflow.COMPONENTS)
    airflow.start_airflow(settings, tuple(c for c in airflow.COMPONENTS if "scheduler" not in c))
    api = airflow.wait_for_dags(settings)
    if restarting:
        airflow.end_stale_live_runs(api)
    for dag_id in (*airflow.PARTS.values(), airflow.PIPELINE):
        paused = settings.live_rate == 0 and dag_id == airflow.PARTS["generator"]
        api.patch(f"/dags/{dag_id}", {"is_paused": paused})
    if settings.live_rate == 0:
        log.info("CINESTREAM_LIVE_RATE=0: cinestream_generate is paused (no live ratings)")
    parts = admin.partition_offsets(settings, settings.ratings_topic)
    run_id = None
    if backlog and not sum(p.messages for p in parts) and not api.latest_run(airflow.PIPELINE):
        span = backlog_span_s or 2400
        start = datetime.fromtimestamp(time.time() - span, tz=UTC).isoformat(timespec="seconds")
        log.info(
            "empty topic: cinestream_pipeline makes a backlog of %d ratings over the last %.0f "
            "minutes (the seed's option A); live generation waits for it",
            backlog,
            span / 60,
        )
        run_id = airflow.trigger_backlog(api, backlog, start, span)
    airflow.start_airflow(settings)
    if run_id is None:
        return
    state = airflow.wait_for_run(api, airflow.PIPELINE, run_id, wait_s)
    if state != "success":
        raise CinestreamError(
            f"the first {airflow.PIPELINE} run is {state}: open {settings.airflow_url}/dags/"
            f"{airflow.PIPELINE}/runs/{run_id} for its task logs"
        )


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


def down(settings: Settings) -> Iterator[tuple[str, bool]]:
    """Stop every part; yields (name, was running).

    The processor holding the checkpoint is asked to stop between batches first; then Airflow
    stops, and with it (or right after: the processes below its components, collected before
    they stop, and those running with this stack's AIRFLOW_HOME) every task and Spark job it had
    started: no orphan spark-submit survives."""
    yield (
        "processor",
        stop_processor(settings)
        if reachable(settings.resolved_database_url)
        else ManagedProcess("processor", settings).stop(),
    )
    # Airflow's tasks and their Spark jobs, found before their parents stop (task processes
    # rename themselves, so the process tree finds them, and the environment those that left it).
    components = [ManagedProcess(name, settings) for name in airflow.COMPONENTS]
    tasks = descendants([pid for c in components if (pid := c.pid())])
    names = (*airflow.COMPONENTS, "dashboard", "api", "generator")

    def stop(name: str) -> bool:
        # The scheduler waits for its running tasks (the live generator's run lasts an hour):
        # give it a few seconds, then its process group (tasks included) is killed.
        timeout_s = 10 if name == "airflow-scheduler" else 30
        return ManagedProcess(name, settings).stop(timeout_s=timeout_s)

    # Side by side: none of them needs another to stop (their tasks were collected above), and
    # one after another they took 32 s (the api-server alone 11 s, the scheduler its 10 s).
    with ThreadPoolExecutor(len(names)) as pool:
        yield from zip(names, pool.map(stop, names), strict=True)
    tasks |= set(processes_with_env("AIRFLOW_HOME", str(airflow.airflow_home(settings))))
    strays = sorted(pid for pid in tasks if pid_alive(pid))
    if strays:
        log.info("stopping %d processes Airflow had started (tasks, Spark jobs)", len(strays))
    yield "airflow-tasks", kill_processes(strays) > 0
    spark = LocalSpark(settings)  # the workers side by side (stateless: a short timeout)
    running = spark.running()
    spark.stop()
    # A profile without them says nothing of Spark's daemons or HDFS, unless some ran.
    yield from _said(running, settings.uses_local_spark_cluster)
    # HDFS (nothing writes checkpoints any more) and Kafka stop side by side.
    hdfs = LocalHDFS(settings)
    with ThreadPoolExecutor(1) as pool:
        hdfs_stopped = pool.submit(hdfs.stop)
        kafka = LocalKafka(settings)  # one line per node ("kafka" when single)
        running = {n.name: kafka.process(n).pid() is not None for n in kafka.nodes}
        kafka.stop()
        yield from running.items()
        yield from _said(hdfs_stopped.result(), settings.uses_local_hdfs)
    yield "postgres", LocalPostgres(settings).stop()


def _said(stopped: dict[str, bool], part_of_profile: bool) -> Iterator[tuple[str, bool]]:
    """``down``'s lines for daemons of one kind: all of them in a profile that has them, else
    only those that were running (left by another profile)."""
    for name, was_running in stopped.items():
        if was_running or part_of_profile:
            yield name, was_running


def stop_processor(settings: Settings, timeout_s: float = 120) -> bool:
    """Ask the processor on the checkpoint to stop between batches and wait for it; one the
    local stack started itself (its pid file) is terminated if it has not stopped by then."""
    managed = ManagedProcess("processor", settings)
    if not request_processor_stop(settings, timeout_s, lambda: managed.pid() is not None):
        return False
    managed.stop(timeout_s=30)
    return True


def reset_checkpoint(settings: Settings, *, accept_deleted: bool = False) -> Iterator[str]:
    """:func:`cinestream.reset.reset_checkpoint` after stopping the local stack's processor."""
    if stop_processor(settings):
        yield "stopped the processor"
    yield from starting_over.reset_checkpoint(
        settings, accept_deleted=accept_deleted, stop_processor=False
    )


def reset(settings: Settings, *, keep_topics: bool) -> Iterator[str]:
    """:func:`cinestream.reset.reset` after stopping the local stack's processor and live
    generator (processes it started, known by their pid files)."""
    if stop_processor(settings):
        yield "stopped the processor"
    if ManagedProcess("generator", settings).stop():
        yield "stopped the live generator"
    yield from starting_over.reset(settings, keep_topics=keep_topics, stop_processor=False)
