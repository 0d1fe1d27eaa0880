"""`cinestream status`: where each part of the local stack is and whether it runs, and where to
look once `up` is done."""

from __future__ import annotations

from typing import Any

from cinestream.errors import first_line
from cinestream.kafka import admin
from cinestream.local import airflow
from cinestream.local.hdfs import LocalHDFS
from cinestream.local.kafka_nodes import LocalKafka
from cinestream.local.processes import ManagedProcess
from cinestream.local.spark import LocalSpark
from cinestream.net import port_open
from cinestream.settings import Settings
from cinestream.store.checkpoint_lock import CheckpointLock
from cinestream.store.connection import reachable

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
