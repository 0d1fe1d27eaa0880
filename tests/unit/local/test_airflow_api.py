"""The local Airflow REST client says in one line when the api-server does not answer."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cinestream.local import airflow
from cinestream.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is


def test_an_api_server_that_does_not_answer_is_one_line_naming_its_url_and_log(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path, airflow_port=_closed_port())
    password = airflow.passwords_file(settings)
    password.parent.mkdir(parents=True)
    password.write_text(json.dumps({"admin": "secret"}))

    with pytest.raises(airflow.AirflowUnreachable) as caught:
        airflow.AirflowAPI(settings, timeout_s=2).get("/dags")

    message = str(caught.value)
    assert "\n" not in message
    assert f"api-server at {settings.airflow_url} does not answer (ConnectError" in message
    assert str(settings.log_dir / "airflow-api-server.log") in message


def test_two_stacks_run_airflow_servers_on_ports_of_their_own(tmp_path: Path) -> None:
    """The log servers and the scheduler's health check move with the api-server's port
    (Airflow's own defaults beside 8080), so a test stack beside `make up` binds none of its."""
    ports = {}
    for airflow_port in (8080, 27080):
        env = airflow.airflow_env(
            Settings(state_dir=tmp_path / str(airflow_port), airflow_port=airflow_port)
        )
        ports[airflow_port] = {
            env["AIRFLOW__API__PORT"],
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
            env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"],
            env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"],
        }
    assert ports[8080] == {"8080", "8793", "8794", "8974"}
    assert ports[27080] == {"27080", "27793", "27794", "27974"}
