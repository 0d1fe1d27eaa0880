"""doctor's line on what the store holds committed but not yet published (a stuck publication
would otherwise read as an audit's PENDING every day)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinestream.doctor import _publication_check
from cinestream.settings import Settings
from cinestream.store.reads import Unpublished


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path / "state"))
    return Settings()


def test_nothing_pending_is_ok(settings: Settings) -> None:
    check = _publication_check(settings, Unpublished(0, 0), running=False)
    assert check.status == "OK"
    assert "every committed window is in metrics; the DLQ outbox is empty" in check.detail


def test_pending_under_a_running_processor_is_ok(settings: Settings) -> None:
    check = _publication_check(settings, Unpublished(3, 1), running=True)
    assert check.status == "OK"
    assert "3 committed windows not yet in metrics" in check.detail
    assert "the running processor publishes them" in check.detail


def test_pending_with_no_processor_warns_with_the_command_that_publishes(
    settings: Settings,
) -> None:
    check = _publication_check(settings, Unpublished(0, 7), running=False)
    assert check.status == "WARN"
    assert "7 invalid records waiting in the DLQ outbox for ratings_dlq" in check.detail
    assert "-> fix: cinestream process --trigger available-now" in check.line()
