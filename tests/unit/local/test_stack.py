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
