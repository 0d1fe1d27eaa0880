from __future__ import annotations

import pytest
from pydantic import ValidationError

from cinestream.settings import Settings


@pytest.fixture(autouse=True)
def _no_cinestream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are what these tests check: nothing from the caller's environment."""
    import os

    for key in list(os.environ):
        if key.startswith("CINESTREAM_"):
            monkeypatch.delenv(key)


def test_defaults_target_the_local_stack(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    s = Settings()
    assert (s.ratings_topic, s.metrics_topic, s.dlq_topic) == ("ratings", "metrics", "ratings_dlq")
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.checkpoint_dir.startswith("file://") and str(tmp_path) in s.checkpoint_dir
    url = s.resolved_database_url
    assert url.startswith("postgresql://cinestream:") and url.endswith("@127.0.0.1:5432/cinestream")
    assert url == Settings().resolved_database_url  # the generated password is stable
    assert "***" in s.redacted_database_url()


def test_window_types_from_env(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", "tumbling_1min, sliding_5min_1min")
    assert [w.name for w in Settings().windows] == ["tumbling_1min", "sliding_5min_1min"]


@pytest.mark.parametrize("value", ["sliding_5min_1min", "tumbling_7x", ""])
def test_bad_window_types_fail_at_start(monkeypatch, value: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", value)
    with pytest.raises(ValidationError):
        Settings()


def test_external_database_url_wins(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_DATABASE_URL", "postgresql://u:p@db:5432/x")
    assert Settings().resolved_database_url == "postgresql://u:p@db:5432/x"
    assert not Settings().uses_local_database


def test_an_empty_state_dir_is_refused_not_taken_as_the_current_directory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", "")
    with pytest.raises(ValueError, match="unset CINESTREAM_STATE_DIR"):
        Settings()
