"""The local stack as a whole: `up`, `down`, `status` and `reset`."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cinestream.errors import CinestreamError, first_line
from cinestream.jars import jars
from cinestream.kafka import acls, admin
from cinestream.local import airflow, modes
from cinestream.local.hdfs import LocalHDFS
from cinestream.local.kafka import LocalKafka
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
from cinestream.settings import Settings
from cinestream.store import pipeline, schema
from cinestream.store.checkpoint_lock import CheckpointLock
from cinestream.store.connection import connect, reachable
from cinestream.stream.checkpoint import delete_checkpoint
from cinestream.stream.stop_files import checkpoint_stop_file, request_stop

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
    checkpoint_stop_file(settings).unlink(missing_ok=True)
    return True


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


def reset_checkpoint(settings: Settings, *, accept_deleted: bool = False) -> Iterator[str]:
    """Remove only the checkpoint: the next run resumes from the offsets the store holds, every
    window kept. After the topic was deleted and recreated the store follows the new topic from
    its start; with ``accept_deleted``, records Kafka deleted before they were counted are
    skipped (said per partition)."""
    if stop_processor(settings):
        yield "stopped the processor"
    checkpoint = settings.checkpoint_dir
    deleted = delete_checkpoint(checkpoint)
    yield ("deleted checkpoint " if deleted else "no checkpoint at ") + checkpoint
    topic = settings.ratings_topic
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        pipeline.forget_checkpoint(conn, checkpoint)
        binding = pipeline.stored_binding(conn)
        if binding is None:
            yield "the store holds nothing yet: the next run reads the topic from its start"
            return
        if binding.ratings_topic != topic:
            raise CinestreamError(
                f"the store holds the windows of topic {binding.ratings_topic!r}, not {topic!r}: "
                f"set CINESTREAM_RATINGS_TOPIC={binding.ratings_topic} (or use the database of "
                f"{topic!r})"
            )
        current_id = admin.topic_id(settings, topic)
        if current_id is None:
            raise CinestreamError(
                f"cannot read the id of topic {topic!r} on {settings.kafka_bootstrap} (is Kafka "
                "up? `cinestream status`); nothing was changed in the store"
            )
        if pipeline.rebind_to_topic(conn, topic, current_id):
            yield (
                f"topic {topic} was recreated (id {binding.topic_id} -> {current_id}): the store "
                "keeps every window and counts the new topic into them from its start"
            )
            return
        if accept_deleted:
            low = {str(p.partition): p.low for p in admin.partition_offsets(settings, topic)}
            for p, n in sorted(pipeline.skip_deleted(conn, low).items()):
                yield (
                    f"partition {p}: {n} records were deleted by Kafka before they were counted; "
                    f"the next run starts at offset {low[p]}"
                )
        binding = pipeline.stored_binding(conn)
        assert binding is not None
        yield (
            "the store's windows are kept; the next run resumes from "
            + pipeline.format_offsets(topic, binding.end_offsets)
        )


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
        "deleted checkpoint " if delete_checkpoint(settings.checkpoint_dir) else "no checkpoint at "
    ) + settings.checkpoint_dir
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        schema.truncate_all(conn)
    yield "emptied window_metrics and the window store"


# What each DAG runs, as `cinestream status` says it.
ROLES = {
    "processor": "keeps the stream processor running",
    "generator": "runs the live generator",
    "backfill": "backfills each past hour",
    "quality": "validates what stream and backfill wrote",
    "audit": "audits each past day against the topic, backfills the hours that differ",
    "dlq": "reports invalid records as they reach the DLQ (asset watcher)",
}


def _airflow_parts(settings: Settings) -> dict[str, str]:
    """Per DAG of the live platform: what it runs, paused or not, and its latest run."""
    api = airflow.AirflowAPI(settings, timeout_s=5)
    states = {}
    for part, dag_id in airflow.PARTS.items():
        try:
            paused = api.get(f"/dags/{dag_id}")["is_paused"]
            run = api.latest_run(dag_id)
        except Exception as exc:  # noqa: BLE001 - one line per DAG, whatever went wrong
            states[dag_id] = f"{ROLES[part]}; state unknown ({first_line(exc)})"
            continue
        latest = f"latest run {run['dag_run_id']} {run['state']}" if run else "no run yet"
        states[dag_id] = f"{ROLES[part]}{'; PAUSED' if paused else ''}; {latest}"
    return states


def _cluster_states(settings: Settings) -> dict[str, str]:
    """kafka-1..3, spark-master, spark-worker-1..2: whether each runs, and its part."""
    states: dict[str, str] = {}
    kafka = LocalKafka(settings)
    brokers = admin.cluster_brokers(settings)
    for node in kafka.nodes:
        pid = kafka.process(node).pid()
        if pid is None:
            states[node.name] = "stopped"
        else:
            member = "in the cluster" if node.node_id in brokers else "not answering yet"
            states[node.name] = (
                f"running (pid {pid}, broker {node.node_id} on {node.host}:{node.port}, {member})"
            )
    spark = LocalSpark(settings)
    master = spark.state()
    for daemon in spark.daemons:
        pid = spark.process(daemon).pid()
        if pid is None:
            states[daemon.name] = "stopped"
        elif daemon is spark.master:
            states[daemon.name] = (
                f"running (pid {pid}, {settings.spark_master}, UI {spark.ui_url}, "
                f"{master.get('aliveworkers', 0)} workers alive)"
            )
        else:
            states[daemon.name] = f"running (pid {pid}, UI port {daemon.ui_port})"
    if settings.uses_local_hdfs:
        states.update(_hdfs_states(settings))
    return states


def _hdfs_states(settings: Settings) -> dict[str, str]:
    """hdfs-namenode and hdfs-datanode: whether each runs, with its URL."""
    hdfs = LocalHDFS(settings)
    states = {}
    state = hdfs.state()
    for daemon in hdfs.daemons:
        pid = hdfs.process(daemon).pid()
        if pid is None:
            states[daemon.name] = "stopped"
        elif daemon is hdfs.namenode:
            detail = (
                f"{state['state']}, {state['live_datanodes']} live DataNode(s)"
                + (", in safe mode" if state["safemode"] else "")
                if state
                else "not answering yet"
            )
            states[daemon.name] = (
                f"running (pid {pid}, {hdfs.url}, UI {hdfs.ui_url(daemon)}, {detail})"
            )
        else:
            states[daemon.name] = (
                f"running (pid {pid}, data 127.0.0.1:{hdfs.port + 2}, UI {hdfs.ui_url(daemon)})"
            )
    return states


def _service_state(settings: Settings) -> dict[str, str]:
    states: dict[str, str] = {}
    if settings.cluster and settings.uses_local_kafka:
        states.update(_cluster_states(settings))
    else:
        states["kafka"] = "running" if admin.broker_ready(settings) else "stopped"
    states["postgres"] = "running" if reachable(settings.resolved_database_url) else "stopped"
    for name, port in (
        ("api", settings.api_port),
        ("dashboard", settings.dashboard_port),
        ("airflow", settings.airflow_port),
    ):
        states[name] = "running" if port_open("127.0.0.1", port) else "stopped"
    holder = None
    if states["postgres"] == "running":
        holder = CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir).holder()
    states["processor"] = f"running ({holder})" if holder else "stopped"
    generator = ManagedProcess("generator", settings).pid()
    if generator:  # a generator started by hand in the background
        states["generator"] = f"running (pid {generator})"
    if states["airflow"] == "running":
        states.update(_airflow_parts(settings))
    return states


def status(settings: Settings) -> dict[str, Any]:
    """Where each service is and whether it runs (``cinestream status --json``); for the live
    platform, which DAG runs which part and how its latest run went."""
    return {
        "profile": settings.profile,
        "kafka_bootstrap": settings.kafka_bootstrap,
        # What any client needs to reach the cluster (credentials included).
        "kafka_client_config": settings.kafka_client_config,
        "spark_master": settings.spark_master,
        "database_url": settings.resolved_database_url,
        "database_url_redacted": settings.redacted_database_url(),
        "api_url": settings.api_url,
        "dashboard_url": settings.dashboard_url,
        "airflow_url": settings.airflow_url,
        "checkpoint_dir": settings.checkpoint_dir,
        "state_dir": str(settings.state_dir),
        "airflow_dags": dict(airflow.PARTS),
        "services": _service_state(settings),
    }


def _admin_password(settings: Settings) -> str:
    return airflow.admin_password(settings) or f"in {airflow.passwords_file(settings)}"


def where_to_look(settings: Settings) -> str:
    """What `up` prints: every service, its URL, and the commands to look further."""
    return "\n".join(
        [
            "",
            "cinestream is up.",
            f"  Kafka       {settings.kafka_description}  (topics {settings.ratings_topic}, "
            f"{settings.metrics_topic}, {settings.dlq_topic})",
            *(
                [
                    f"  Spark       {settings.spark_master}  (master UI "
                    f"{LocalSpark(settings).ui_url}, two one-core workers)",
                    f"  checkpoint  {settings.checkpoint_dir}"
                    + (
                        f"  (HDFS NameNode UI {hdfs.ui_url(hdfs.namenode)})"
                        if settings.uses_local_hdfs and (hdfs := LocalHDFS(settings))
                        else ""
                    ),
                    "  credentials cinestream status --json  (kafka_client_config)",
                ]
                if settings.cluster
                else []
            ),
            f"  PostgreSQL  {settings.redacted_database_url()}  (table window_metrics)",
            f"  API         {settings.api_url}  (OpenAPI at {settings.api_url}/docs)",
            f"  dashboard   {settings.dashboard_url}",
            f"  Airflow     {settings.airflow_url}  (user admin, password "
            f"{_admin_password(settings)})",
            f"  logs        {settings.log_dir}",
            "  Airflow runs the platform: cinestream_stream (the processor), cinestream_generate",
            f"  ({settings.live_rate:g} ratings/s), cinestream_backfill (hourly), "
            "cinestream_quality (on window_metrics),",
            "  cinestream_audit (daily), cinestream_dlq (when invalid records arrive)",
            "  cinestream status      services and URLs",
            "  cinestream doctor      offsets, lag, windows; what to fix",
            "  cinestream topics list",
            "  make down              stop everything",
        ]
    )
