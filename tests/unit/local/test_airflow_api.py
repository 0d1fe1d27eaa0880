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
