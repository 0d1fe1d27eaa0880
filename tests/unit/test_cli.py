"""Bad arguments get one line saying what is wrong, never a stack trace."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cinestream.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_commands() -> None:
    out = run("--help").stdout
    for command in (
        "up",
        "down",
        "status",
        "topics",
        "generate",
        "process",
        "backfill",
        "doctor",
        "reset",
    ):
        assert f"  {command} " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("process", "--trigger", "sometimes"), "'sometimes' is not one of"),
        (("process", "--interval", "ten"), "bad duration 'ten'"),
        (("generate", "--count", "0"), "--count"),
        (("generate",), "give --count or --duration"),
        (("generate", "--count", "5", "--start", "2025-01-01T00:00:00Z"), "--start and --span"),
        (("backfill", "--start", "yesterday", "--end", "2025-01-01T00:00:00Z"), "bad time"),
        (
            ("backfill", "--start", "2025-01-02T00:00:00Z", "--end", "2025-01-01T00:00:00Z"),
            "--end must be after --start",
        ),
        (("topics", "purge"), "'purge' is not one of"),
        (
            ("audit", "--start", "1900-01-01T00:00:00Z", "--end", "2025-01-01T00:00:00Z"),
            "is outside the event-time range 2000-01-01T00:00:00.000Z",
        ),
        (
            ("backfill", "--start", "0001-01-01T00:00:00+01:00", "--end", "2025-01-01T00:00:00Z"),
            "is outside the event-time range",
        ),
        (
            ("audit", "--start", "2025-01-02T00:00:00Z", "--end", "2025-01-01T00:00:00Z"),
            "--end must be after --start",
        ),
    ],
)
def test_bad_arguments_give_one_line(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_kafka_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    result = run("topics", "list")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "Kafka at 127.0.0.1:1 is unavailable" in result.stderr


def test_bad_configuration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", "weekly")
    result = run("status")
    assert result.returncode == 1
    assert "CINESTREAM_WINDOW_TYPES" in result.stderr and "Traceback" not in result.stderr
