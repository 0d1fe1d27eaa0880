"""`cinestream doctor` names each secret, password or log file in the state dir that other users
can read, with the command that fixes it (no services needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinestream import doctor
from cinestream.errors import ServiceUnavailable
from cinestream.local import modes
from cinestream.settings import Settings


def _put(path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    path.chmod(mode)
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for folder in ("airflow", "logs", "secrets"):
        (state / folder).mkdir(mode=0o700)
    return state


def test_one_warn_line_per_readable_secret_or_log_naming_it_and_the_fix(state: Path) -> None:
    password = _put(state / "airflow" / "simple_auth_manager_passwords.json.generated", 0o644)
    task_log = _put(state / "airflow" / "logs" / "dag_id=d" / "attempt=1.log", 0o640)
    for folder in (task_log.parent, task_log.parent.parent):
        folder.chmod(0o700)
    _put(state / "secrets" / "postgres_password", 0o600)  # private: not named
    _put(state / "checkpoints" / "offsets", 0o644)  # not a secret, not a log: not named
    lines = [c.line() for c in doctor.permission_checks(Settings(state_dir=state))]
    assert lines == [
        f"WARN permissions {task_log} holds logs and is mode 640: its group can read it  -> fix: "
        f"chmod 600 {task_log}  (`cinestream up` makes every such path private)",
        f"WARN permissions {password} holds a secret and is mode 644: every local user can "
        f"read it  -> fix: chmod 600 {password}  (`cinestream up` makes every such path private)",
    ]
    assert all("\n" not in line for line in lines)


def test_an_open_state_dir_is_named_too(state: Path) -> None:
    state.chmod(0o755)
    (check,) = doctor.permission_checks(Settings(state_dir=state))
    assert check.status == "WARN"
    assert (
        check.detail
        == f"{state} holds secrets and logs and is mode 755: every local user can list or enter it"
    )
    assert check.fix.startswith(f"chmod 700 {state}")


def test_all_private_is_one_ok_line_and_no_state_dir_no_line(state: Path, tmp_path: Path) -> None:
    _put(state / "secrets" / "postgres_password", 0o600)
    _put(state / "logs" / "kafka.log", 0o600)
    (check,) = doctor.permission_checks(Settings(state_dir=state))
    assert (check.status, check.name) == ("OK", "permissions")
    assert doctor.permission_checks(Settings(state_dir=tmp_path / "none")) == []


def test_many_readable_logs_are_named_up_to_a_bound_then_counted(state: Path) -> None:
    for i in range(modes.SHOWN + 3):
        _put(state / "logs" / f"{i:02}.log", 0o644)
    checks = doctor.permission_checks(Settings(state_dir=state))
    assert len(checks) == modes.SHOWN + 1 and all(c.status == "WARN" for c in checks)
    assert checks[-1].detail == f"3 more paths under {state} other users can read"
    assert checks[-1].fix == "cinestream up (makes them private)"


def test_the_warning_comes_even_when_kafka_is_down(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = _put(state / "airflow" / "simple_auth_manager_passwords.json.generated", 0o644)

    def no_broker(settings: Settings) -> None:
        raise ServiceUnavailable("Kafka at 127.0.0.1:9092 is not reachable")

    monkeypatch.setattr(doctor.admin, "list_topics", no_broker)
    checks = doctor.run_checks(Settings(state_dir=state))
    assert [(c.status, c.name) for c in checks] == [("WARN", "permissions"), ("FAIL", "kafka")]
    assert str(password) in checks[0].detail
