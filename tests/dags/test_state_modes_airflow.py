"""Airflow on the test stack keeps what it writes to its owner: the admin password it generates,
the api-server's log (which prints it) and the task logs. Airflow starts only in tests/dags, so
this is where it is checked; the rest of the state dir is tests/integration/test_state_modes.py.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from cinestream.local import airflow, modes
from cinestream.local.postgres import server_gid
from cinestream.local.processes import ManagedProcess
from cinestream.settings import Settings
from tests.shared_stack import TEST_STATE, Pipeline
from tests.stack_cli import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.dags]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_airflows_admin_password_and_task_logs_are_its_owners_only(
    pipeline: Pipeline, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CINESTREAM_AIRFLOW_PORT", str(port))  # for airflow_run's tasks too
    settings = Settings()
    server = ManagedProcess("airflow-api-server", settings)
    try:
        airflow.start_airflow(settings, ("airflow-api-server",))  # as `up` starts it
        password = wait_for(
            lambda: airflow.admin_password(settings), "the generated admin password", 120, 1
        )
        assert password != "admin"
        # Through the LocalExecutor, which writes task logs (a plain `dags test` prints them), and
        # run as the stack runs Airflow: Airflow's folder permissions apply to a log's own folder
        # only (its dag_id=/run_id= parents are made with the umask), the stack's umask 077 to
        # the rest.
        run = airflow.airflow_cli(
            settings, "dags", "test", "cinestream_setup", "--use-executor", check=False
        )
        output = run.stdout + run.stderr
        assert "state=success" in output.split("DagRun Finished")[-1], output[-3000:]
    finally:
        server.stop()

    assert _mode(airflow.passwords_file(settings)) == 0o600
    assert _mode(server.log_file) == 0o600  # the api-server prints the password it generated
    assert _mode(airflow.airflow_home(settings)) == 0o700
    task_logs = airflow.airflow_home(settings) / "logs"
    written = [p for p in task_logs.rglob("*") if p.is_file()]
    assert any("dag_id=cinestream_setup" in str(p) for p in written), written
    assert {_mode(p) for p in written} == {0o600}
    folders = [task_logs, *(p for p in task_logs.rglob("*") if p.is_dir())]
    assert {_mode(p) for p in folders} == {0o700}
    assert modes.loose_paths(TEST_STATE, server_gid(settings)) == []
