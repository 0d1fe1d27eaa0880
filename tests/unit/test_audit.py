"""cinestream audit's own rules and comparisons (pure: no services)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest

from cinestream.audit.compare import (
    PENDING_WAIT_S,
    Finding,
    compare_window,
    publication_exact,
    settle_publication,
)
from cinestream.audit.rules import Recomputed, parse_rating, window_starts
from cinestream.audit.run import AuditReport
from cinestream.windows import parse_window_type
from tests.reference import iso, recompute

T = 1_762_797_900_000  # 2025-11-10T18:05:00Z
MIN = 60_000


def rating(**fields: object) -> bytes:
    body = {"user_id": 7, "movie_id": 42, "rating": 3.5, "timestamp": T} | fields
    return json.dumps(body).encode()


def test_a_valid_rating_parses_to_half_stars() -> None:
    assert parse_rating(rating()) == (7, 42, 7, T)
    assert parse_rating(rating(rating=5)) == (7, 42, 10, T)  # an integer rating is a number
    assert parse_rating(rating(extra={"x": 1})) == (7, 42, 7, T)  # extra fields are ignored


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"not json",
        b"[1, 2]",
        b"{'user_id': 1}",
        "é".encode("latin-1"),
        rating() + b" {}",
        rating(user_id=0),
        rating(user_id=True),
        rating(user_id=1.0),
        rating(user_id="7"),
        rating(movie_id=2**63),
        rating(rating=5.5),
        rating(rating=0.25),
        rating(rating=0),
        rating(rating="4"),
        rating(rating=None),
        rating(timestamp=float(T)),
        rating(timestamp=946_684_799_999),  # 1999-12-31T23:59:59.999Z
        rating(timestamp=4_102_444_800_000),  # 2100-01-01: the end is exclusive
        b'{"user_id": 7, "movie_id": 42, "rating": NaN, "timestamp": 1762797900000}',
    ],
)
def test_anything_else_is_invalid(value: bytes | None) -> None:
    assert parse_rating(value) is None


def test_a_rating_falls_in_one_tumbling_window_and_in_size_over_slide_sliding_ones() -> None:
    assert window_starts(parse_window_type("tumbling_1min"), T + 59_999) == [T]
    starts = window_starts(parse_window_type("sliding_5min_1min"), T + 30_000)
    assert sorted(starts) == [T - 4 * MIN + i * MIN for i in range(5)]
    assert all(s <= T + 30_000 < s + 5 * MIN for s in starts)


def test_the_recomputation_equals_the_tests_reference() -> None:
    rng = random.Random(5)
    events = [
        (rng.randint(1, 50), rng.randint(1, 30), rng.randint(1, 10) / 2, T + rng.randrange(3 * MIN))
        for _ in range(5_000)
    ]
    windows: dict[int, Recomputed] = {}
    for i, (_u, movie, r, ts) in enumerate(events):
        windows.setdefault(ts - ts % MIN, Recomputed()).add(i % 3, i, movie, int(r * 2))
    expected = recompute(events)
    assert len(windows) == len(expected) == 3
    for start, window in windows.items():
        ref, got = expected[iso(start)], window.metric()
        for name in ("count", "p50_rating", "p95_rating", "top_movies"):
            assert got[name] == ref[name], (start, name)
        assert got["avg_rating"] == pytest.approx(ref["avg_rating"], rel=1e-12)
    assert windows[T].where().startswith("p0 ")


def _window(n: int, movie: int = 1, half: int = 8) -> Recomputed:
    w = Recomputed()
    for i in range(n):
        w.add(0, 100 + i, movie, half)
    return w


def _row(w: Recomputed) -> dict[str, object]:
    return dict(w.metric())


KEY = ("tumbling_1min", T)


def test_equal_windows_have_no_findings() -> None:
    w = _window(5)
    assert compare_window(KEY, MIN, w, _row(w), _row(w), 0, False) == []


def test_a_count_short_in_postgres_is_a_difference_named_with_its_offsets() -> None:
    w = _window(5)
    stored = _row(_window(4))
    (finding,) = compare_window(KEY, MIN, w, stored, _row(w), 0, False)
    assert finding.confirmed and finding.where == "postgres"
    line = finding.line()
    assert line.startswith("DIFF tumbling_1min 2025-11-10T18:05:00.000Z postgres: count 4 != 5")
    assert "p0 100..104" in line


def test_late_ratings_are_named_with_the_backfill_that_restores_them() -> None:
    w = _window(5)
    stored = _row(_window(3))
    (finding,) = compare_window(KEY, MIN, w, stored, _row(w), 2, False)
    assert "2 late ratings not in its metrics" in finding.problem
    assert "cinestream backfill --start 2025-11-10T18:05:00.000Z" in finding.problem


def test_a_window_larger_than_the_topic_after_retention_cannot_be_confirmed() -> None:
    w = _window(3)
    stored = _row(_window(5))
    (finding,) = compare_window(KEY, MIN, w, stored, stored, 0, True)  # the topic agrees
    assert not finding.confirmed and finding.line().startswith("UNVERIFIABLE")
    missing, topic = compare_window(KEY, MIN, w, None, stored, 0, True)
    assert missing.where == "postgres" and missing.confirmed
    assert topic.where == "metrics topic" and not topic.confirmed
    # ...but one the topic has more ratings for is a difference even then.
    (postgres,) = compare_window(KEY, MIN, _window(6), stored, stored, 0, True)
    assert postgres.confirmed


def test_the_metrics_topic_is_compared_with_postgres() -> None:
    w = _window(5)
    assert [f.where for f in compare_window(KEY, MIN, w, _row(w), None, 0, False)] == [
        "metrics topic"
    ]
    stale = _row(_window(4))
    (finding,) = compare_window(KEY, MIN, w, _row(w), stale, 0, False)
    assert finding.where == "metrics topic" and "count 4 != 5" in finding.problem
    (finding,) = compare_window(KEY, MIN, None, None, stale, 0, False)
    assert "PostgreSQL not" in finding.problem
    missing = compare_window(KEY, MIN, w, None, None, 0, False)
    assert [(f.where, f.problem[:7]) for f in missing] == [
        ("postgres", "missing"),
        ("metrics topic", "missing"),
    ]


def test_the_report_fails_on_a_difference_not_on_what_it_cannot_confirm() -> None:
    report = AuditReport(T, T + MIN, windows=1, ratings=5, read={0: (0, 5)})
    assert report.ok and report.lines()[-1].startswith("OK audit [2025-11-10T18:05:00.000Z")
    w, stored = _window(3), _row(_window(5))
    report.findings += compare_window(KEY, MIN, w, stored, stored, 0, True)
    assert report.ok
    report.findings += compare_window(KEY, MIN, _window(6), stored, _row(_window(6)), 0, False)
    assert (
        not report.ok and report.lines()[-1].startswith("FAIL") and "1 differ" in report.lines()[-1]
    )


# --- the metrics topic while publication lags the commit ----------------------------------------
def test_only_a_published_version_that_holds_still_across_the_read_is_compared_at_once() -> None:
    assert publication_exact(KEY, {KEY: (3, 3)}, {KEY: (3, 3)})
    assert publication_exact(KEY, {KEY: (3, 3)}, {KEY: (3, 4)})  # published again: same value
    assert publication_exact(KEY, {}, {})  # no window anywhere: the topic must not have it
    assert not publication_exact(KEY, {KEY: (4, 3)}, {KEY: (4, 4)})  # pending at the snapshot
    assert not publication_exact(KEY, {KEY: (3, 3)}, {KEY: (4, 3)})  # changed during the read
    assert not publication_exact(KEY, {}, {KEY: (1, 1)})  # created after the snapshot


class ScriptedView:
    """The store and the metrics topic as each successive look sees them (the last repeats)."""

    def __init__(
        self,
        stores: list[tuple[dict[Any, Any], dict[Any, tuple[int, int]]]],
        tails: list[dict[Any, Any]],
    ) -> None:
        self.stores, self.tails, self.looks = stores, tails, 0

    def store_now(self) -> tuple[dict[Any, Any], dict[Any, tuple[int, int]]]:
        self.looks += 1
        return self.stores[min(self.looks, len(self.stores)) - 1]

    def topic_tail(self) -> dict[Any, Any]:
        return self.tails.pop(0) if self.tails else {}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _settle(
    view: ScriptedView, snapshot: dict[Any, tuple[int, int]], published: dict[Any, Any]
) -> tuple[list[Finding], int, Clock]:
    w = _window(5)
    clock = Clock()

    def compare(key: Any, record: Mapping[str, Any] | None) -> list[Finding]:
        return [
            f
            for f in compare_window(key, MIN, w, _row(w), record, 0, False)
            if f.where != "postgres"
        ]

    findings, moved = settle_publication(
        {KEY}, snapshot, published, compare, view, clock=clock, sleep=clock.sleep
    )
    return findings, moved, clock


def test_a_window_committed_but_not_yet_published_is_waited_for_not_a_difference() -> None:
    # The snapshot saw version 2 committed, 1 published: the topic's last record is version 1's.
    now, older = _row(_window(5)), _row(_window(4))
    published = {KEY: older}
    view = ScriptedView(
        [({KEY: now}, {KEY: (2, 1)}), ({KEY: now}, {KEY: (2, 1)}), ({KEY: now}, {KEY: (2, 2)})],
        [{KEY: now}],  # what the publisher wrote meanwhile
    )
    findings, moved, clock = _settle(view, {KEY: (2, 1)}, published)
    assert (findings, moved) == ([], 0)
    assert published[KEY] == now and 0 < clock.now < PENDING_WAIT_S


def test_a_window_the_publisher_never_catches_up_with_is_pending_not_a_difference() -> None:
    now, older = _row(_window(5)), _row(_window(4))
    view = ScriptedView([({KEY: now}, {KEY: (2, 1)})], [])
    findings, moved, clock = _settle(view, {KEY: (2, 1)}, {KEY: older})
    (pending,) = findings
    assert pending.pending and not pending.confirmed and moved == 0
    assert pending.line().startswith("PENDING tumbling_1min 2025-11-10T18:05:00.000Z metrics topic")
    assert "PostgreSQL committed version 2, the topic has up to version 1" in pending.line()
    assert clock.now >= PENDING_WAIT_S
    report = AuditReport(T, T + MIN, windows=1, ratings=5, findings=findings)
    assert report.ok and "(1 not yet in the metrics topic: PENDING)" in report.lines()[-1]


def test_a_window_changed_after_the_snapshot_is_compared_with_its_newer_row() -> None:
    # Published at the snapshot (version 1), then the stream committed and published version 2
    # before the topic was read: the topic's record is version 2's, newer than the snapshot.
    newer = _row(_window(7))
    view = ScriptedView([({KEY: newer}, {KEY: (2, 2)})], [])
    findings, moved, _ = _settle(view, {KEY: (1, 1)}, {KEY: newer})
    assert (findings, moved) == ([], 1)
    # ...and a topic record equal to neither is a difference, against the newer row.
    view = ScriptedView([({KEY: newer}, {KEY: (2, 2)})], [])
    bogus = {**newer, "p95_rating": 0.5}
    (diff,) = _settle(view, {KEY: (1, 1)}, {KEY: bogus})[0]
    assert diff.confirmed and diff.line().startswith("DIFF tumbling_1min")
    assert (
        "p95_rating 0.5 != " in diff.problem
        and "changed after the audit's snapshot" in diff.problem
    )


def test_a_wrong_record_of_a_window_that_holds_still_is_still_a_difference() -> None:
    # Pending at the snapshot; once published the topic holds a value that is not the window's.
    w = _row(_window(5))
    view = ScriptedView([({KEY: w}, {KEY: (2, 2)})], [{KEY: {**w, "count": 9}}])
    (diff,) = _settle(view, {KEY: (2, 1)}, {KEY: _row(_window(4))})[0]
    assert diff.confirmed and diff.where == "metrics topic" and "count 9 != 5" in diff.problem


def test_a_window_that_keeps_changing_is_pending() -> None:
    w = _row(_window(5))
    stores = [({KEY: w}, {KEY: (v, v)}) for v in range(2, 200)]  # a new version at every look
    findings, _, _ = _settle(ScriptedView(stores, []), {KEY: (1, 1)}, {KEY: _row(_window(4))})
    (pending,) = findings
    assert pending.pending and "kept changing while the topic was read" in pending.problem
