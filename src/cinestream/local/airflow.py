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
from cinestream.local.processes import ManagedProcess
from cinestream.net import port_open
from cinestream.settings import REPO_ROOT, Settings, local_db_password, stored_secret
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


def airflow_home(settings: Settings) -> Path:
    """``AIRFLOW_HOME`` of the local stack (logs, generated admin password)."""
    return settings.state_dir / "airflow"


def metadata_db_url(settings: Settings, database: str = "airflow") -> str:
    """Airflow's metadata database: a separate database and role in the same server."""
    if settings.airflow_database_url:
        return settings.airflow_database_url
    password = local_db_password(settings.state_dir, role=AIRFLOW_ROLE)
    return (
        f"postgresql+psycopg2://airflow:{quote(password)}@127.0.0.1:{settings.pg_port}/{database}"
    )


def connections(settings: Settings) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables: Kafka, Spark and the metrics database."""
    db = urlsplit(settings.resolved_database_url)
    master = settings.spark_master
    return {
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
            {
                "conn_type": "kafka",
                "extra": {
                    "bootstrap.servers": settings.kafka_bootstrap,
                    "group.id": "airflow",
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
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url(settings, database),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
            home / "simple_auth_manager_passwords.json.generated"
        ),
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": stored_secret(settings.state_dir, "airflow_jwt_secret"),
        "AIRFLOW__CORE__FERNET_KEY": stored_secret(
            settings.state_dir, "airflow_fernet_key", _new_fernet_key
        ),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        **python_env(),
        **connections(settings),
    }
    # The task processes read the same CINESTREAM_* settings as everything else.
    for key, value in os.environ.items():
        if key.startswith("CINESTREAM_"):
            env[key] = value
    env["CINESTREAM_STATE_DIR"] = str(settings.state_dir)
    return env


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def admin_password(settings: Settings) -> str | None:
    """The ``admin`` password SimpleAuthManager generated, once Airflow has started."""
    path = airflow_home(settings) / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("admin")


def airflow_cli(settings: Settings, *args: str, check: bool = True) -> Any:
    """Run ``airflow ARGS`` in the local stack's environment (output captured)."""
    return subprocess.run(
        [AIRFLOW, *args],
        env={**os.environ, **airflow_env(settings)},
        check=check,
        capture_output=True,
        text=True,
    )


def start_airflow(settings: Settings) -> None:
    """Airflow 3 on the local PostgreSQL: migrate, then the four components, LocalExecutor."""
    if all(ManagedProcess(name, settings).pid() for name in COMPONENTS):
        return
    log.info("migrating Airflow's metadata database")
    result = airflow_cli(settings, "db", "migrate", check=False)
    if result.returncode:
        raise CinestreamError(f"airflow db migrate failed: {result.stderr.strip()[-500:]}")
    env = airflow_env(settings)
    for name in COMPONENTS:
        proc = ManagedProcess(name, settings)
        if proc.pid() is None:
            proc.start([AIRFLOW, name.removeprefix("airflow-")], env=env)
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
