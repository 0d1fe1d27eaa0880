"""Paths and commands the local stack starts with (no services needed)."""

from __future__ import annotations

from pathlib import Path

from cinestream.local.stack import dashboard_command
from cinestream.settings import Settings
from cinestream.stream.submit import job_path


def test_the_dashboard_command_runs_the_app_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    cmd = dashboard_command(Settings(), port=8600)
    app = Path(cmd[cmd.index("run") + 1])
    assert app.is_file() and app.name == "app.py" and app.parent.name == "dashboard"
    assert cmd[cmd.index("--server.port") + 1] == "8600"


def test_the_spark_jobs_exist() -> None:
    for script in ("ratings_stream_processor.py", "ratings_backfill.py"):
        assert job_path(script).is_file(), script


def test_kraft_cluster_ids_never_look_like_an_option() -> None:
    from cinestream.local.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2_000)]  # ~1 in 64 random ids starts with "-"
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)
