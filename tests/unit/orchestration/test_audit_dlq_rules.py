"""The pure rules of cinestream_audit (range, hours to repair) and cinestream_dlq (grouping,
share, verdict, where a report reads, the watcher's one event per burst). No services."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from cinestream.audit.compare import Finding
from cinestream.audit.run import AuditReport
from cinestream.errors import CinestreamError
from cinestream.orchestration import audit_tasks, dlq_triage
from cinestream.orchestration.audit_tasks import (
    HOUR_MS,
    audit_range,
    backfill_arguments,
    cannot_repair,
    close_wait_s,
    differing_windows,
    left_alone,
    repair_ranges,
    unrepaired_line,
)
from cinestream.orchestration.dlq_triage import (
    counted_since,
    fired_at,
    group_records,
    invalid_share,
    is_degraded,
    reason_kind,
    top_groups,
    verdict,
    window_starts,
)

MIN = 60_000
H0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# --- audit --------------------------------------------------------------------------------------
def test_repair_ranges_cover_each_window_whole_and_merge_adjacent_hours() -> None:
    windows = [
        (H0 + 5 * MIN, MIN),  # inside hour 0
        (H0 + 59 * MIN, MIN),  # the last minute of hour 0: still hour 0 only
        (H0 + 3 * HOUR_MS + 58 * MIN, 5 * MIN),  # 03:58-04:03 needs hours 3 and 4
        (H0 + 5 * HOUR_MS, MIN),  # adjacent to hours 3-4: merged into one range
        (H0 + 9 * HOUR_MS + 30 * MIN, MIN),
    ]
    assert repair_ranges(windows) == [
        (H0, H0 + HOUR_MS),
        (H0 + 3 * HOUR_MS, H0 + 6 * HOUR_MS),
        (H0 + 9 * HOUR_MS, H0 + 10 * HOUR_MS),
    ]
    assert repair_ranges([]) == []


def test_only_confirmed_differences_of_configured_types_are_repaired() -> None:
    findings = [
        Finding("tumbling_1min", H0, "postgres", "count 1 != 2", "p0 1..2"),
        Finding("tumbling_1min", H0, "metrics topic", "count 1 != 2", "p0 1..2"),  # same window
        Finding("tumbling_1min", H0 + HOUR_MS, "postgres", "x", "", confirmed=False),
        Finding("tumbling_5min", H0 + 2 * HOUR_MS, "postgres", "x", ""),  # not configured
    ]
    assert differing_windows(findings, {"tumbling_1min": MIN}) == [(H0, MIN)]


def test_audit_range_params_win_over_the_data_interval() -> None:
    day = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    assert audit_range(None, None, *day) == (1_795_996_800_000, 1_796_083_200_000)
    assert audit_range("", "", *day) == (1_795_996_800_000, 1_796_083_200_000)
    assert audit_range("2025-12-01T00:00:00Z", "2025-12-01T02:00:00Z", *day) == (
        H0,
        H0 + 2 * HOUR_MS,
    )


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2025-12-01T00:00:00Z", None, "set both Params start and end"),
        ("yesterday", "2025-12-01T00:00:00Z", "Param start: bad time 'yesterday'"),
        ("2025-12-01T00:00:00Z", "2190-01-01T00:00:00Z", "Param end: '2190-01-01T00:00:00Z' is"),
        ("2025-12-01T02:00:00Z", "2025-12-01T01:00:00Z", "must be after Param start"),
    ],
)
def test_bad_params_are_one_line(start: str | None, end: str | None, message: str) -> None:
    day = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(CinestreamError) as err:
        audit_range(start, end, *day)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_backfill_arguments_one_job_per_range() -> None:
    result = {"repair": [["2025-12-01T00:00:00.000Z", "2025-12-01T01:00:00.000Z"]]}
    assert backfill_arguments(result, "15min") == [
        [
            "--start",
            "2025-12-01T00:00:00.000Z",
            "--end",
            "2025-12-01T01:00:00.000Z",
            "--lookback",
            "15min",
        ]
    ]
    assert backfill_arguments({"repair": []}, "15min") == []


# --- dlq ----------------------------------------------------------------------------------------
def _dlq(error: str | None) -> bytes:
    return json.dumps({"error": error, "raw": "x"}).encode()


def test_reasons_are_grouped_without_the_values_they_quote() -> None:
    assert reason_kind("rating must be one of 0.5, 1.0, ..., 5.0, got 7.0") == (
        "rating must be one of 0.5, 1.0, ..., 5.0"
    )
    assert reason_kind('user_id must be an integer, got "abc"') == "user_id must be an integer"
    assert reason_kind("value is not valid UTF-8") == "value is not valid UTF-8"
    assert reason_kind(None).startswith("(no reason")


def test_group_records_by_reason_and_producer_key() -> None:
    records = [
        (b"u1", _dlq("rating must be one of 0.5, 1.0, ..., 5.0, got 7.0")),
        (b"u1", _dlq("rating must be one of 0.5, 1.0, ..., 5.0, got 9.0")),
        (b"u2", _dlq("rating must be one of 0.5, 1.0, ..., 5.0, got 0.2")),
        (b"u2", _dlq("value is not valid UTF-8")),
        (None, _dlq("value is null (a tombstone), not a rating")),
        (b"\xff", b"not json"),
    ]
    grouped = group_records(records)
    assert [(g["reason"], g["count"]) for g in grouped["reasons"]] == [
        ("rating must be one of 0.5, 1.0, ..., 5.0", 3),
        ("(no reason: not a cinestream DLQ record)", 1),
        ("value is not valid UTF-8", 1),
        ("value is null (a tombstone), not a rating", 1),
    ]
    assert grouped["reasons"][0]["example"].endswith("got 7.0")
    assert [(g["key"], g["count"]) for g in grouped["keys"]] == [
        ("u1", 2),
        ("u2", 2),
        ("(no key)", 1),
        ("0xff", 1),
    ]
    assert grouped["keys"][1]["reasons"] == {
        "rating must be one of 0.5, 1.0, ..., 5.0": 1,
        "value is not valid UTF-8": 1,
    }


def test_top_groups_sum_the_rest_as_others() -> None:
    counts = Counter({f"k{i}": 30 - i for i in range(25)})
    top = top_groups(counts, top=3)
    assert top == [("k0", 30), ("k1", 29), ("k2", 28), ("others", sum(range(6, 28)))]


def test_share_and_verdict() -> None:
    assert invalid_share(0, 0) == 0.0
    assert invalid_share(5, 95) == 0.05
    assert not is_degraded(0.05, 0.05)  # equal to the threshold: fine
    assert is_degraded(0.0501, 0.05)
    # A burst of 60 invalid in 1,000 records, then a report of a few seconds with 40 valid only:
    # over the period still 60 / 1,040 > 5 %.
    judged = verdict([(60, 940), (0, 40)], 0.05)
    assert (judged.invalid, judged.valid, judged.degraded) == (60, 980, True)
    assert judged.share == pytest.approx(60 / 1040)
    assert not verdict([(60, 940), (0, 1000)], 0.05).degraded  # 3 %


def test_counted_since_survives_a_reset_store() -> None:
    before = {"valid_total": 1000, "invalid_total": 10}
    assert counted_since({"valid_total": 1500, "invalid_total": 13}, before) == {
        "valid_total": 500,
        "invalid_total": 3,
    }
    # The store was emptied (reset) since: its totals count from zero.
    assert counted_since({"valid_total": 200, "invalid_total": 1}, before) == {
        "valid_total": 200,
        "invalid_total": 1,
    }
    assert counted_since({"valid_total": 7, "invalid_total": 0}, None) == {
        "valid_total": 7,
        "invalid_total": 0,
    }


def test_a_report_starts_where_the_previous_ended_or_at_the_first_record() -> None:
    parts = {0: (0, 50), 1: (10, 12), 2: (30, 40)}
    previous = {"0": 20, "1": 5, "2": 45}  # p1: deleted by retention; p2: beyond the end
    assert window_starts(parts, previous) == {0: 20, 1: 10, 2: 30}
    assert window_starts(parts, None) == {0: 0, 1: 10, 2: 30}


def test_fired_at_is_the_newest_watcher_event() -> None:
    events = {
        "ratings_dlq": [
            SimpleNamespace(extra={"from_trigger": True, "payload": {"fired_at": 10.5}}),
            SimpleNamespace(extra={"from_trigger": True, "payload": {"fired_at": 12.0}}),
            SimpleNamespace(extra={}),
        ]
    }
    assert fired_at(events) == 12.0
    assert fired_at({"ratings_dlq": [SimpleNamespace(extra=None)]}) is None
    assert fired_at(None) is None


def test_the_watcher_makes_one_event_per_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(dlq_triage.time, "time", lambda: now[0])
    monkeypatch.setitem(dlq_triage._last_event, "at", float("-inf"))

    def message(offset: int) -> SimpleNamespace:
        value = _dlq("rating must be one of 0.5, 1.0, ..., 5.0, got 7.0")
        return SimpleNamespace(partition=lambda: 0, offset=lambda: offset, value=lambda: value)

    first = dlq_triage.dlq_arrived(message(0))
    assert first == {
        "fired_at": 1000.0,
        "partition": 0,
        "offset": 0,
        "reason": "rating must be one of 0.5, 1.0, ..., 5.0",
    }
    now[0] += dlq_triage.DEBOUNCE_S - 0.1
    assert dlq_triage.dlq_arrived(message(1)) is None
    now[0] += 0.2
    assert dlq_triage.dlq_arrived(message(2))["offset"] == 2


# --- what the audit's repair leaves, and says ---------------------------------------------------
def _diff(
    start: int,
    stored: int | None,
    recomputed: int | None,
    where: str = "postgres",
    confirmed: bool = True,
    open: bool = False,
) -> Finding:
    """A finding as compare_window makes them: PostgreSQL's count (late included) and the
    topic's."""
    return Finding(
        "tumbling_1min",
        start,
        where,
        "count",
        "",
        confirmed,
        open=open,
        stored=stored,
        recomputed=recomputed,
    )


def test_a_backfill_repairs_closed_windows_that_hold_no_more_than_the_topic() -> None:
    assert cannot_repair(_diff(H0, 999, 1000)) is None  # short in PostgreSQL
    assert cannot_repair(_diff(H0, 1000, 1000)) is None  # a field altered, the count right
    assert cannot_repair(_diff(H0, None, 1000)) is None  # missing in PostgreSQL
    assert cannot_repair(_diff(H0, 1000, 1000, where="metrics topic")) is None
    assert cannot_repair(_diff(H0, 1000, 1000, open=True)) == "open"
    assert cannot_repair(_diff(H0, 1000, 900)) == "more"  # retention deleted 100 of its ratings
    assert cannot_repair(_diff(H0, 12, 0)) == "more"  # the topic has none of them
    assert cannot_repair(_diff(H0, None, 0, where="metrics topic")) == "topic-only"


def test_open_and_larger_than_the_topic_windows_are_not_backfilled() -> None:
    findings = [
        _diff(H0 + 5 * MIN, 999, 1000),
        _diff(H0 + HOUR_MS + 2 * MIN, 1000, 900),  # more than the topic: its hour not backfilled
        _diff(H0 + 23 * HOUR_MS + 59 * MIN, 10, 11, open=True),
        _diff(H0 + 2 * HOUR_MS, 5, 5, confirmed=False),  # UNVERIFIABLE
    ]
    assert differing_windows(findings, {"tumbling_1min": MIN}) == [(H0 + 5 * MIN, MIN)]
    assert left_alone(findings) == {
        "open": ["tumbling_1min 2025-12-01T23:59:00.000Z"],
        "more": ["tumbling_1min 2025-12-01T01:02:00.000Z"],
        "topic-only": [],
    }


def test_the_daily_run_waits_for_the_watermark_to_close_the_day_within_a_bound() -> None:
    end, lateness = H0 + 24 * HOUR_MS, 120_000
    # 00:00:05, the watermark at 23:58:03: wait, at most until 00:05:00.
    assert close_wait_s(end, end - 117_000, end + 5_000, lateness) == 295.0
    assert close_wait_s(end, end, end + 5_000, lateness) == 0  # closed
    assert close_wait_s(end, None, end + 60_000, lateness) == 240.0  # no stream yet: bounded
    assert close_wait_s(end, end - 117_000, end + 301_000, lateness) == 0  # past the bound
    assert close_wait_s(end, end - 117_000, end - 1, lateness) == 0  # not ended: no waiting


def test_the_run_ends_with_one_line_naming_what_it_left_and_why() -> None:
    line = unrepaired_line(
        {"more": ["tumbling_1min 2025-12-01T01:02:00.000Z"], "open": [], "topic-only": []}, [], 42
    )
    assert line == (
        "not repaired: 1 window (tumbling_1min 2025-12-01T01:02:00.000Z): PostgreSQL holds more "
        "ratings than the topic still has (retention deleted records, or a row was changed by "
        "hand); a backfill keeps such a window, as it never throws away ratings Kafka no longer "
        "holds: check those ratings' source, then correct the rows or accept them (audit 42, "
        "Browse -> Data quality (cinestream))"
    )
    many = unrepaired_line({"open": [f"w{i}" for i in range(7)]}, ["x"], None)
    assert many.startswith("not repaired: the backfill did not repair 1 window (x); 7 windows ")
    assert "(w0, w1, w2, w3, w4 and 2 more): still open when audited" in many
    assert "\n" not in many


def test_audit_backfills_only_what_it_can_and_records_what_it_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = AuditReport(H0, H0 + 24 * HOUR_MS, closed_until_ms=H0 + 24 * HOUR_MS - 117_000)
    report.findings = [
        _diff(H0 + 5 * MIN, 999, 1000),
        _diff(H0 + HOUR_MS + 2 * MIN, 1000, 900),
        _diff(H0 + 23 * HOUR_MS + 59 * MIN, 10, 11, open=True),
    ]
    settings = SimpleNamespace(windows=[SimpleNamespace(name="tumbling_1min", size_ms=MIN)])
    recorded: list[tuple[str, list[list[str]], list[str]]] = []
    monkeypatch.setattr(audit_tasks, "_wait_for_close", lambda end_ms: None)
    monkeypatch.setattr(audit_tasks, "_run", lambda lo, hi: (report, settings))
    monkeypatch.setattr(
        audit_tasks,
        "_record",
        lambda s, r, source, phase, repair, extra=None: (
            recorded.append((phase, repair, extra)) or 7
        ),
    )
    result = audit_tasks.audit({}, _dt(H0), _dt(H0 + 24 * HOUR_MS), "cinestream_audit/x")
    assert result["repair"] == [["2025-12-01T00:00:00.000Z", "2025-12-01T01:00:00.000Z"]]
    assert result["left"]["open"] == ["tumbling_1min 2025-12-01T23:59:00.000Z"]
    assert result["left"]["more"] == ["tumbling_1min 2025-12-01T01:02:00.000Z"]
    ((phase, _, extra),) = recorded
    assert extra == [
        "OPEN tumbling_1min 2025-12-01T23:59:00.000Z: differs while still open (watermark "
        "2025-12-01T23:58:03.000Z): not backfilled",
        "UNREPAIRABLE tumbling_1min 2025-12-01T01:02:00.000Z: PostgreSQL holds more ratings "
        "than the topic: not backfilled",
    ]


def test_reaudit_fails_with_one_line_instead_of_backfilling_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = SimpleNamespace(windows=[SimpleNamespace(name="tumbling_1min", size_ms=MIN)])
    hour = ["2025-12-01T00:00:00.000Z", "2025-12-01T01:00:00.000Z"]
    # After the backfill: the repaired minute equals; the minute that holds more still differs.
    after = AuditReport(H0, H0 + HOUR_MS)
    after.findings = [_diff(H0 + 7 * MIN, 1000, 900)]
    runs: list[tuple[int, int]] = []
    monkeypatch.setattr(
        audit_tasks, "_run", lambda lo, hi: runs.append((lo, hi)) or (after, settings)
    )
    monkeypatch.setattr(audit_tasks, "_record", lambda *a, **k: 8)
    first = {"audit_id": 7, "repair": [hour], "left": {"open": [], "more": [], "topic-only": []}}
    with pytest.raises(CinestreamError) as err:
        audit_tasks.reaudit(first, "cinestream_audit/x")
    assert runs == [(H0, H0 + HOUR_MS)]  # one re-audit of the backfilled hour, no loop
    message = str(err.value)
    assert (
        message.startswith(
            "not repaired: 1 window (tumbling_1min 2025-12-01T00:07:00.000Z): PostgreSQL holds more"
        )
        and "did not repair" not in message
        and "\n" not in message
    )
    # Nothing repairable at all: no re-audit, the same one line from the first audit's findings.
    runs.clear()
    only = {"audit_id": 7, "repair": [], "left": {"more": ["tumbling_1min X"]}}
    with pytest.raises(CinestreamError, match=r"^not repaired: 1 window \(tumbling_1min X\)"):
        audit_tasks.reaudit(only, "cinestream_audit/x")
    assert runs == []
    # A clean re-audit of what was repaired, nothing left: success.
    after.findings = []
    assert audit_tasks.reaudit({**first}, "s") == {"repaired": 1}
