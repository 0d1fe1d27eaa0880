"""The SPEC's watermark: min(newest valid event time seen, wall clock) - allowed lateness."""

from __future__ import annotations

from cinestream.store.commit import next_watermark

NOW = 1_764_000_000_000
LATENESS = 120_000


def test_an_event_ahead_of_the_wall_clock_moves_the_watermark_only_to_the_wall_clock() -> None:
    # 4 min 50 s ahead: inside the future tolerance, a valid rating, but not a clock to follow.
    assert next_watermark(0, NOW + 290_000, NOW, LATENESS) == NOW - LATENESS


def test_events_behind_the_wall_clock_set_it_as_before() -> None:
    assert next_watermark(0, NOW - 30_000, NOW, LATENESS) == NOW - 30_000 - LATENESS


def test_it_never_goes_back_and_waits_for_a_first_event() -> None:
    assert next_watermark(NOW - 60_000, NOW - 600_000, NOW, LATENESS) == NOW - 60_000
    assert next_watermark(0, 0, NOW, LATENESS) == 0


def test_as_the_wall_clock_catches_up_the_newest_event_takes_over_again() -> None:
    ahead = NOW + 290_000
    assert next_watermark(NOW - LATENESS, ahead, NOW + 60_000, LATENESS) == NOW + 60_000 - LATENESS
    assert next_watermark(NOW, ahead, NOW + 900_000, LATENESS) == ahead - LATENESS
