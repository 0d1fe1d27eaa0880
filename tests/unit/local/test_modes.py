"""The state dir is its owner's only wherever it holds a secret, a password or logs: the walk that
finds what is too open, the tightening `up` does, and the places that create such files (no
services needed)."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from cinestream.errors import CinestreamError
from cinestream.local import modes
from cinestream.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _put(path: Path, mode: int, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _external_db(state: Path) -> Settings:
    """Settings whose PostgreSQL is not local: no server of another user passes through, whoever
    runs the tests (root included)."""
    return Settings(state_dir=state, database_url="postgresql://u:p@db:5432/x")


def _older_state_dir(root: Path) -> dict[str, Path]:
    """A state dir as an older cinestream left it (measured after `make up`: .state 0755, the
    Airflow password file 0644, task logs 0755), with files that hold no secret beside them."""
    paths = {
        "password": _put(root / "airflow" / "simple_auth_manager_passwords.json.generated", 0o644),
        "airflow_cfg": _put(root / "airflow" / "airflow.cfg", 0o600),
        "task_log": _put(
            root / "airflow" / "logs" / "dag_id=d" / "run_id=r" / "task_id=t" / "attempt=1.log",
            0o644,
        ),
        "api_log": _put(root / "logs" / "airflow-api-server.log", 0o644),
        "kafka_log": _put(root / "logs" / "kafka.log", 0o664),
        "secret": _put(root / "secrets" / "postgres_password", 0o644),
        "broker_config": _put(root / "kafka" / "kafka-1" / "server.properties", 0o644),
        "executor_log": _put(root / "spark" / "spark-worker-1" / "app-1" / "0" / "stderr", 0o644),
        "executor_script": _put(root / "spark" / "spark-worker-1" / "app-1" / "run.sh", 0o755),
        # Not secrets, not logs: left as they are.
        "cluster_id": _put(root / "kafka" / "cluster_id", 0o644),
        "segment": _put(root / "kafka" / "kafka-1" / "data" / "ratings-0" / "0.log", 0o644),
        "offsets": _put(root / "checkpoints" / "p" / "offsets" / "0", 0o644),
        "profile": _put(root / "profile", 0o644, "single"),
    }
    for folder in root.rglob("*"):
        if folder.is_dir():
            folder.chmod(0o755)
    root.chmod(0o755)
    return paths


def test_an_older_state_dir_is_found_too_open_and_tightened_to_its_owner(tmp_path: Path) -> None:
    state = tmp_path / "state"
    paths = _older_state_dir(state)
    task_dirs = [paths["task_log"].parents[i] for i in range(4)]  # task_id=t .. airflow/logs
    worker_dirs = [paths["executor_log"].parents[i] for i in range(4)]  # 0 .. spark
    wanted = {
        state: 0o700,
        state / "airflow": 0o700,
        state / "logs": 0o700,
        state / "secrets": 0o700,
        paths["password"]: 0o600,
        paths["task_log"]: 0o600,
        paths["api_log"]: 0o600,
        paths["kafka_log"]: 0o600,
        paths["secret"]: 0o600,
        paths["broker_config"]: 0o600,
        paths["executor_log"]: 0o600,
        paths["executor_script"]: 0o700,  # a log tree's file keeps its owner's bits
        **dict.fromkeys(task_dirs + worker_dirs, 0o700),
    }
    loose = modes.loose_paths(state)
    assert {item.path: item.wanted for item in loose} == wanted
    assert all(item.mode == _mode(item.path) for item in loose)
    assert loose[0].path == state and loose[0].is_dir and loose[0].mode == 0o755

    assert modes.tighten(state) == loose
    assert {path: _mode(path) for path in wanted} == wanted
    assert modes.loose_paths(state) == []
    assert modes.tighten(state) == []
    for name in ("airflow_cfg", "cluster_id", "segment", "offsets", "profile"):
        assert _mode(paths[name]) == (0o600 if name == "airflow_cfg" else 0o644), name


def test_any_group_or_other_bit_is_too_open_and_a_tightened_secret_is_not_executable(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    secret = _put(state / "secrets" / "s", 0o640)
    log = _put(state / "logs" / "x.log", 0o602)  # others may write, not read: still too open
    runnable = _put(state / "airflow" / "simple_auth_manager_passwords.json.generated", 0o754)
    _put(state / "airflow" / "airflow.cfg", 0o700)  # its owner's only: not too open
    for folder in (state / "secrets", state / "logs", state / "airflow"):
        folder.chmod(0o701)
    loose = {item.path: (item.wanted, item.exposure()) for item in modes.loose_paths(state)}
    assert loose == {
        state / "airflow": (0o700, "every local user can list or enter it"),
        state / "logs": (0o700, "every local user can list or enter it"),
        state / "secrets": (0o700, "every local user can list or enter it"),
        secret: (0o600, "its group can read it"),
        log: (0o600, "every local user can read it"),
        runnable: (0o600, "every local user can read it"),
    }


def test_symbolic_links_are_neither_followed_nor_changed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    outside = _put(tmp_path / "elsewhere" / "shared.log", 0o644)
    outside.parent.chmod(0o755)  # a folder others may read, whatever the umask made it
    (state / "logs" / "shared.log").symlink_to(outside)
    (state / "secrets").symlink_to(outside.parent)
    assert modes.loose_paths(state) == []
    assert modes.tighten(state) == []
    assert _mode(outside) == 0o644 and _mode(outside.parent) == 0o755


def test_only_the_state_dir_and_logs_let_the_servers_group_through(tmp_path: Path) -> None:
    # Root starts PostgreSQL as `postgres`, which must pass through the state dir and logs/.
    state = tmp_path / "state"
    gid = os.getgid()  # the group the files here have; stands for postgres's
    for folder in (state / "logs", state / "secrets"):
        folder.mkdir(parents=True)
        folder.chmod(0o710)
    state.chmod(0o750)
    loose = {item.path: item.wanted for item in modes.loose_paths(state, traverse_gid=gid)}
    assert loose == {state: 0o710, state / "secrets": 0o700}
    # Without a server of another user (or for another group) nobody passes through.
    loose = {item.path: item.wanted for item in modes.loose_paths(state)}
    assert loose == {state: 0o700, state / "logs": 0o700, state / "secrets": 0o700}
    assert set(modes.loose_paths(state, traverse_gid=gid + 1)) == set(modes.loose_paths(state))


def test_letting_a_group_through_adds_its_x_and_leaves_the_rest_to_tighten(
    tmp_path: Path,
) -> None:
    gid = os.getgid()
    private, opened = tmp_path / "private", tmp_path / "opened"
    private.mkdir(mode=0o700)
    opened.mkdir()
    opened.chmod(0o755)
    modes.let_group_through(private, gid)
    modes.let_group_through(opened, gid)
    assert _mode(private) == 0o710 and _mode(opened) == 0o755
    assert private.stat().st_gid == opened.stat().st_gid == gid


def test_a_path_this_user_cannot_change_is_named_with_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    secret = _put(state / "secrets" / "s", 0o644)
    (state / "secrets").chmod(0o700)

    def refuse(self: Path, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "chmod", refuse)
    with pytest.raises(CinestreamError, match=rf"`chmod 600 {secret}` as its owner or root"):
        modes.tighten(state)


def test_no_state_dir_nothing_to_tighten(tmp_path: Path) -> None:
    assert modes.loose_paths(tmp_path / "missing") == []
    assert modes.tighten(tmp_path / "missing") == []


def test_up_tightens_an_older_state_dir_naming_each_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cinestream.local.stack import secure_state_dir

    state = tmp_path / "state"
    paths = _older_state_dir(state)
    caplog.set_level(logging.INFO, "cinestream.stack")
    tightened = secure_state_dir(_external_db(state))
    assert modes.loose_paths(state) == []
    logged = [r.getMessage() for r in caplog.records]
    assert len(tightened) == len(logged) <= modes.SHOWN
    assert f"made private {state} (secrets and logs): 755 -> 700" in logged
    assert f"made private {paths['password']} (a secret): 644 -> 600" in logged
    assert f"made private {paths['task_log']} (logs): 644 -> 600" in logged


def test_up_names_the_first_paths_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cinestream.local.stack import secure_state_dir

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "logs").mkdir(mode=0o700)
    for i in range(modes.SHOWN + 5):
        _put(state / "logs" / f"{i:02}.log", 0o644)
    caplog.set_level(logging.INFO, "cinestream.stack")
    assert len(secure_state_dir(_external_db(state))) == modes.SHOWN + 5
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == modes.SHOWN + 1
    assert logged[-1] == f"made private 5 more paths under {state}"


def test_a_new_state_dir_is_created_private_by_whatever_creates_it_first(tmp_path: Path) -> None:
    from cinestream.local.secrets import local_db_password, private_dir
    from cinestream.local.stack import choose_profile

    by_secret, by_profile = tmp_path / "a" / "state", tmp_path / "b"
    local_db_password(by_secret)
    assert _mode(by_secret.parent) == _mode(by_secret) == _mode(by_secret / "secrets") == 0o700
    assert _mode(by_secret / "secrets" / "postgres_password") == 0o600
    choose_profile(by_profile, cluster=False)
    assert _mode(by_profile) == 0o700 and _mode(by_profile / "profile") == 0o600
    opened = tmp_path / "opened"
    opened.mkdir(mode=0o755)
    opened.chmod(0o755)
    assert private_dir(opened) == opened and _mode(opened) == 0o755  # an existing one: as it is


def test_airflow_gets_a_private_password_file_and_owner_only_task_logs(tmp_path: Path) -> None:
    from cinestream.local.airflow import admin_password, airflow_env, passwords_file

    settings = Settings(state_dir=tmp_path / "state")
    env = airflow_env(settings)
    path = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    assert path == passwords_file(settings) and path.read_text() == ""
    assert admin_password(settings) is None  # made for Airflow, not filled in yet
    # SimpleAuthManager fills it in with open("a+") and the process's umask: the mode stays.
    old = os.umask(0o022)
    try:
        with open(path, "a+") as out:
            out.write('{"admin": "generated"}\n')
    finally:
        os.umask(old)
    assert _mode(path) == 0o600 and admin_password(settings) == "generated"
    assert _mode(settings.state_dir) == _mode(path.parent) == 0o700
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS"] == "0o700"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"] == "0o600"
    # The walk knows where Airflow keeps them (one layout, checked from both sides).
    state = settings.state_dir
    assert path.relative_to(state).as_posix() in modes.SECRET_FILES
    base = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    assert base.relative_to(state).as_posix() in modes.LOG_TREES
    assert settings.log_dir.relative_to(state).as_posix() in modes.LOG_TREES
    assert settings.log_dir.relative_to(state).as_posix() in modes.PASSED_THROUGH


def test_a_started_process_logs_privately_and_creates_private_files(tmp_path: Path) -> None:
    from cinestream.local.processes import ManagedProcess

    settings = Settings(state_dir=tmp_path / "state")
    work = tmp_path / "work"
    work.mkdir()
    proc = ManagedProcess("writer", settings)
    write = "import os; open('made', 'w').write('x'); os.mkdir('folder'); print('secret')"
    pid = proc.start([sys.executable, "-c", write], cwd=work)
    os.waitpid(pid, 0)
    assert proc.log_file.read_text().strip() == "secret"
    assert _mode(proc.log_file) == 0o600
    assert _mode(settings.log_dir) == _mode(settings.run_dir) == _mode(settings.state_dir) == 0o700
    assert _mode(work / "made") == 0o600 and _mode(work / "folder") == 0o700


def test_the_umask_block_makes_files_private_and_restores_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        with modes.owner_only_umask():
            (tmp_path / "f").write_text("x")
            (tmp_path / "d").mkdir()
        (tmp_path / "after").write_text("x")
    finally:
        os.umask(before)
    assert _mode(tmp_path / "f") == 0o600 and _mode(tmp_path / "d") == 0o700
    assert _mode(tmp_path / "after") == 0o644


def test_private_file_keeps_an_existing_files_content_and_mode(tmp_path: Path) -> None:
    new = modes.private_file(tmp_path / "new")
    assert _mode(new) == 0o600 and new.read_text() == ""
    old = _put(tmp_path / "old", 0o640, "kept")
    modes.private_file(old)
    assert old.read_text() == "kept" and _mode(old) == 0o640


def test_up_tightens_first_then_starts_everything_under_umask_077(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cinestream.local import stack

    state = tmp_path / "state"
    password = _older_state_dir(state)["password"]
    seen: dict[str, int] = {}

    def start(settings: Settings, **_: object) -> None:
        seen["password"] = _mode(password)
        seen["umask"] = os.umask(0o077)  # read it (and put it back)

    monkeypatch.setattr(stack, "_up", start)
    before = os.umask(0o022)
    try:
        stack.up(_external_db(state), backlog=0, backlog_span_s=None)
        after = os.umask(before)
    finally:
        os.umask(before)
    assert seen == {"password": 0o600, "umask": 0o077}
    assert after == 0o022  # restored once `up` returns
