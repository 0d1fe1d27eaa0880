"""Which windows the quality DAG validates, from the asset events that triggered it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cinestream.orchestration import task_bodies
from cinestream.orchestration.task_bodies import quality_range

A = {"windows_changed": 3, "from": "2025-11-10T18:05:00.000Z", "to": "2025-11-10T18:08:00.000Z"}
B = {"windows_changed": 60, "from": "2025-11-10T16:00:00.000Z", "to": "2025-11-10T17:00:00.000Z"}
NOTHING = {"windows_changed": 0, "since": "2025-11-10T18:09:00+00:00"}


def test_one_event_its_range() -> None:
    assert quality_range([A]) == ("2025-11-10T18:05:00.000Z", "2025-11-10T18:08:00.000Z")


def test_several_events_their_ranges_together() -> None:
    assert quality_range([A, NOTHING, B]) == (
        "2025-11-10T16:00:00.000Z",
        "2025-11-10T18:08:00.000Z",
    )


def test_an_event_without_a_range_means_every_window() -> None:
    assert quality_range([A, {}]) == (None, None)  # e.g. the database clock was unreachable


def test_no_changed_window_means_every_window_not_none() -> None:
    assert quality_range([NOTHING]) == (None, None)


def test_triggering_events_become_the_validated_range(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(task_bodies, "run_quality", lambda start, end: calls.append((start, end)))
    events = {"window_metrics": [SimpleNamespace(extra=A), SimpleNamespace(extra=B)]}
    task_bodies.run_quality_for_events(events)
    task_bodies.run_quality_for_events(None)  # triggered by hand
    task_bodies.run_quality_for_events({"window_metrics": [SimpleNamespace(extra=None)]})
    assert calls == [
        ("2025-11-10T16:00:00.000Z", "2025-11-10T18:08:00.000Z"),
        (None, None),
        (None, None),
    ]
