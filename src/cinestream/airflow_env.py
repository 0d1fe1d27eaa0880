"""The environment of the local Airflow 3 (api-server, scheduler, dag-processor, triggerer).

Connections reach Airflow as ``AIRFLOW_CONN_*``; nothing is hard-coded in the DAGs.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

from cinestream.local_stack import REPO_ROOT
from cinestream.settings import Settings, local_db_password

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


def _secret(settings: Settings, name: str) -> str:
    path = settings.state_dir / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_home(settings: Settings) -> Path:
    return settings.state_dir / "airflow"


def metadata_db_url(settings: Settings, database: str = "airflow") -> str:
    """Airflow's metadata database: a separate database and role in the same server."""
    if settings.airflow_database_url:
        return settings.airflow_database_url
    password = local_db_password(settings.state_dir, role="airflow")
    return (
        f"postgresql+psycopg2://airflow:{quote(password)}@127.0.0.1:{settings.pg_port}/{database}"
    )


def connections(settings: Settings) -> dict[str, str]:
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
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(settings, "airflow_jwt_secret"),
        "AIRFLOW__CORE__FERNET_KEY": _fernet(settings),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        **connections(settings),
    }
    # The task processes read the same CINESTREAM_* settings as everything else.
    for key, value in os.environ.items():
        if key.startswith("CINESTREAM_"):
            env[key] = value
    env["CINESTREAM_STATE_DIR"] = str(settings.state_dir)
    return env


def _fernet(settings: Settings) -> str:
    path = settings.state_dir / "secrets" / "airflow_fernet_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def admin_password(settings: Settings) -> str | None:
    path = airflow_home(settings) / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("admin")
