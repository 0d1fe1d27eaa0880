"""The local Airflow 3: its environment, and its four components (api-server, scheduler,
dag-processor, triggerer) as processes of the local stack.

Connections reach Airflow as ``AIRFLOW_CONN_*``; nothing is hard-coded in the DAGs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from cinestream.errors import CinestreamError
from cinestream.local.modes import private_file
from cinestream.local.processes import ManagedProcess, ensure_port_free
from cinestream.local.secrets import local_db_password, private_dir, stored_secret
from cinestream.net import port_open
from cinestream.orchestration.dlq_triage import DLQ_WATCH_GROUP
from cinestream.orchestration.task_bodies import GENERATOR_CONN_ID
from cinestream.settings import REPO_ROOT, Settings
from cinestream.store.schema import AIRFLOW_ROLE
from cinestream.stream.submit import python_env

log = logging.getLogger(__name__)

COMPONENTS = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
AIRFLOW = str(Path(sys.executable).parent / "airflow")

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def airflow_home(settings: Settings) -> Path:
    """``AIRFLOW_HOME`` of the local stack (logs, generated admin password)."""
    return settings.state_dir / "airflow"


def passwords_file(settings: Settings) -> Path:
    """Where SimpleAuthManager keeps the passwords it generated (the ``admin`` user's)."""
    return airflow_home(settings) / PASSWORDS_FILE


def metadata_db_url(settings: Settings, database: str = "airflow") -> str:
    """Airflow's metadata database: a separate database and role in the same server."""
    if settings.airflow_database_url:
        return settings.airflow_database_url
    password = local_db_password(settings.state_dir, role=AIRFLOW_ROLE)
    return (
        f"postgresql+psycopg2://airflow:{quote(password)}@127.0.0.1:{settings.pg_port}/{database}"
    )


def connections(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables: Kafka (and the DLQ watcher's consumer), Spark and the
    metrics database."""
    db = urlsplit(settings.resolved_database_url)
    master = settings.spark_master
    return {
        # cinestream_setup's and cinestream_reset's topic administration: the admin principal.
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    **settings.for_kafka_role("admin").kafka_client_config,
                    "group.id": "airflow",
                    "socket.timeout.ms": 10000,
                },
            }
        ),
        # The generators' ProduceToTopicOperator: may write the ratings topic only.
        "AIRFLOW_CONN_" + GENERATOR_CONN_ID.upper(): json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    **settings.for_kafka_role("generator").kafka_client_config,
                    "socket.timeout.ms": 10000,
                },
            }
        ),
        # The consumer of the asset watcher on the DLQ (cinestream_dlq), in the triggerer: its
        # own group, from the topic's start the first time, committing only what it has seen.
        "AIRFLOW_CONN_CINESTREAM_DLQ_WATCH": json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    **settings.for_kafka_role("auditor").kafka_client_config,
                    "group.id": DLQ_WATCH_GROUP,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": "false",
                    "socket.timeout.ms": 10000,
                },
            }
        ),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {
                "conn_type": "spark",
                "host": master,
                "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
            }
        ),
        "AIRFLOW_CONN_CINESTREAM_METRICS_DB": json.dumps(
            {
                "conn_type": "postgres",
                "host": db.hostname,
                "port": db.port or 5432,
                "login": db.username,
                "password": db.password,
                "schema": db.path.lstrip("/"),
            }
        ),
    }


def airflow_env(settings: Settings, database: str = "airflow") -> dict[str, str]:
    """The environment every Airflow component and task of the local stack runs with."""
    home = private_dir(airflow_home(settings))
    # SimpleAuthManager fills the file in with the process's umask (0644 with the usual 022): made
    # empty and private first, it keeps that mode.
    passwords = private_file(passwords_file(settings))
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Every DAG says so itself too (is_paused_upon_creation=False): the live platform runs.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        # Each DAG file parsed again every 2 minutes, not every 30 s: cinestream's DAG files
        # change with the project, not by the minute, and at 30 s the dag-processor alone took
        # 0.16 of a core per stack (2026-12-02, a loaded run of `make test` on 2 cores). A
        # changed DAG file shows within 2 minutes, at once after a restart of the stack.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url(settings, database),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
        # A task's first call to the api-server waits 30 s, not Airflow's 5: on a loaded 2-core
        # machine (stacks starting beside Spark jobs, load average 20+) the api-server answered
        # a task's start after 5 s, the task failed before it ran and waited for its retry.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__API_AUTH__JWT_SECRET": stored_secret(settings.state_dir, "airflow_jwt_secret"),
        "AIRFLOW__CORE__FERNET_KEY": stored_secret(
            settings.state_dir, "airflow_fernet_key", _new_fernet_key
        ),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # The scheduler's and triggerer's own servers beside the api-server's port (Airflow's
        # defaults 8793, 8794 and 8974 beside 8080), so that two stacks on one machine (`make
        # up` and a test stack, say) do not fight over them; the health check on loopback only.
        **side_ports(settings.airflow_port),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # Task logs are their owner's only (Airflow's defaults, 0o775 and 0o664, are for tasks
        # impersonating other users, which this stack never does; Airflow chmods new files).
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        **python_env(),
        **connections(settings),
    }
    # The task processes read the same CINESTREAM_* settings as everything else.
    for key, value in os.environ.items():
        if key.startswith("CINESTREAM_"):
            env[key] = value
    env["CINESTREAM_STATE_DIR"] = str(settings.state_dir)
    env["CINESTREAM_LIVE_RATE"] = str(settings.live_rate)
    env["CINESTREAM_PROFILE"] = settings.profile
    return env


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def admin_password(settings: Settings) -> str | None:
    """The ``admin`` password SimpleAuthManager generated, once Airflow has started."""
    path = passwords_file(settings)
    text = path.read_text().strip() if path.exists() else ""
    if not text:  # Airflow has not filled in the file made for it yet
        return None
    return json.loads(text).get("admin")


def airflow_cli(settings: Settings, *args: str, check: bool = True) -> Any:
    """Run ``airflow ARGS`` in the local stack's environment (output captured)."""
    return subprocess.run(
        [AIRFLOW, *args],
        env={**os.environ, **airflow_env(settings)},
        check=check,
        capture_output=True,
        text=True,
        umask=0o077,
    )


def start_airflow(settings: Settings, components: tuple[str, ...] = COMPONENTS) -> None:
    """Airflow 3 on the local PostgreSQL, LocalExecutor: migrate (when none of it runs yet),
    then ``components`` that are not running."""
    procs = [ManagedProcess(name, settings) for name in components]
    if all(proc.pid() for proc in procs):
        return
    if not any(ManagedProcess(name, settings).pid() for name in COMPONENTS):
        log.info("migrating Airflow's metadata database")
        result = airflow_cli(settings, "db", "migrate", check=False)
        if result.returncode:
            raise CinestreamError(f"airflow db migrate failed: {result.stderr.strip()[-500:]}")
    env = airflow_env(settings)
    # Before anything starts: the api-server's port must not be another process's.
    if any(p.name == "airflow-api-server" and p.pid() is None for p in procs):
        ensure_port_free(settings.airflow_port, "Airflow's api-server", "CINESTREAM_AIRFLOW_PORT")
    for proc in procs:
        if proc.pid() is None:
            proc.start([AIRFLOW, proc.name.removeprefix("airflow-")], env=env)
            log.info("started %s, log %s", proc.name, proc.log_file)
    if "airflow-api-server" not in components:
        return
    deadline = time.monotonic() + 180
    while not port_open("127.0.0.1", settings.airflow_port):
        if time.monotonic() > deadline:
            raise CinestreamError(
                f"the Airflow api-server did not open port "
                f"{settings.airflow_port}; see {settings.log_dir}"
            )
        time.sleep(1)


# Which DAG runs which part of the live platform (`cinestream status` says it).
PARTS = {
    "processor": "cinestream_stream",
    "generator": "cinestream_generate",
    "backfill": "cinestream_backfill",
    "quality": "cinestream_quality",
    "audit": "cinestream_audit",
    "dlq": "cinestream_dlq",
}
PIPELINE = "cinestream_pipeline"


def side_ports(airflow_port: int) -> dict[str, str]:
    """Airflow's task-log, trigger-log and scheduler health-check ports for an api-server on
    ``airflow_port``: + 713, + 714 and + 894 (Airflow's defaults beside 8080)."""
    return {
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(airflow_port + 713),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(airflow_port + 714),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(airflow_port + 894),
    }


class AirflowUnreachable(CinestreamError):
    """Airflow's api-server refused or dropped a request (not running, or restarting)."""


class AirflowAPI:
    """The local Airflow's REST API (``/api/v2``) as the ``admin`` user."""

    def __init__(self, settings: Settings, timeout_s: float = 10) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            return self._send(method, path, body)
        except httpx.TransportError as exc:
            raise AirflowUnreachable(
                f"Airflow's api-server at {self.settings.airflow_url} does not answer "
                f"({type(exc).__name__}: {exc}); `cinestream status` says whether it runs, its "
                f"log is {self.settings.log_dir / 'airflow-api-server.log'}"
            ) from exc

    def token(self) -> str:
        """The admin's bearer token (asked for once), for the API and the api-server's views."""
        import httpx

        if self._token is None:
            password = admin_password(self.settings)
            if password is None:
                raise CinestreamError("Airflow has not generated its admin password yet")
            response = httpx.post(
                f"{self.settings.airflow_url}/auth/token",
                json={"username": "admin", "password": password},
                timeout=self.timeout_s,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        import httpx

        response = httpx.request(
            method,
            f"{self.settings.airflow_url}/api/v2{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=self.timeout_s,
        )
        if response.status_code >= 400:
            raise CinestreamError(
                f"Airflow API {method} {path}: {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("PATCH", path, body)

    def latest_run(self, dag_id: str) -> dict[str, Any] | None:
        runs = self.get(f"/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1")["dag_runs"]
        return runs[0] if runs else None


def end_stale_live_runs(api: AirflowAPI) -> None:
    """Mark failed the live runs (stream, generator) that the last stop left queued or running.

    Called before the scheduler starts again: nothing of them runs any more, and with one active
    run per DAG a stale one would hold back the next live run until Airflow finds it orphaned.
    """
    for dag_id in (PARTS["processor"], PARTS["generator"]):
        for state in ("running", "queued"):
            for run in api.get(f"/dags/{dag_id}/dagRuns?state={state}&limit=100")["dag_runs"]:
                api.patch(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})
                log.info(
                    "%s run %s was left %s by the last stop: marked failed, a new run starts",
                    dag_id,
                    run["dag_run_id"],
                    state,
                )


def wait_for_dags(settings: Settings, timeout_s: float = 300) -> AirflowAPI:
    """Wait until the api-server answers and has every cinestream DAG parsed."""
    wanted = {*PARTS.values(), PIPELINE}
    deadline = time.monotonic() + timeout_s
    api = AirflowAPI(settings)
    missing: set[str] = set(wanted)
    while time.monotonic() < deadline:
        try:
            listed = api.get("/dags?limit=100&tags=cinestream")["dags"]
            missing = wanted - {d["dag_id"] for d in listed}
            if not missing:
                return api
        except (CinestreamError, OSError) as exc:
            log.debug("Airflow not ready: %s", exc)
        except Exception as exc:  # noqa: BLE001 - httpx errors while the server starts
            log.debug("Airflow not ready: %s", exc)
        time.sleep(3)
    raise CinestreamError(
        f"Airflow at {settings.airflow_url} did not list the DAGs {sorted(missing)} within "
        f"{timeout_s:.0f}s; see {settings.log_dir}/airflow-dag-processor.log"
    )


def trigger_backlog(api: AirflowAPI, count: int, start: str, span_s: float) -> str:
    """Trigger cinestream_pipeline with a historical backlog; returns the run id."""
    run = api.post(
        f"/dags/{PIPELINE}/dagRuns",
        {
            "logical_date": None,
            "conf": {
                "count": count,
                "start": start,
                "span_s": span_s,
                "duration_s": None,
                "rate": None,
            },
            "note": "the initial backlog of `make up`",
        },
    )
    log.info("triggered %s run %s: %d ratings from %s", PIPELINE, run["dag_run_id"], count, start)
    return str(run["dag_run_id"])


def wait_for_run(api: AirflowAPI, dag_id: str, run_id: str, timeout_s: float) -> str:
    """Wait for a DAG run to finish, logging each task as it changes state; its final state."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    state = "queued"
    unanswered_since: float | None = None
    while time.monotonic() < deadline:
        try:
            run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            tasks = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        except AirflowUnreachable as exc:
            # A busy machine can make the api-server miss a request; a minute of silence is
            # an api-server that is gone, said in one line.
            if unanswered_since is None:
                unanswered_since = time.monotonic()
                log.warning("%s; waiting up to 60 s for it", exc)
            elif time.monotonic() - unanswered_since > 60:
                raise
            time.sleep(3)
            continue
        unanswered_since = None
        state = run["state"]
        for ti in tasks:
            now = ti.get("state") or "none"
            if seen.get(ti["task_id"]) != now and now != "none":
                seen[ti["task_id"]] = now
                log.info("%s: %s %s", dag_id, ti["task_id"], now)
        if state in ("success", "failed"):
            return str(state)
        time.sleep(3)
    return str(state)
