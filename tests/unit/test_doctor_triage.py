"""doctor's line on the newest cinestream_dlq report (the platform's degraded verdict, and a
verdict too old to hold)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cinestream.doctor import _triage_check

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def _verdict(age: timedelta, **fields: Any) -> dict[str, Any]:
    return {"run_at": NOW - age, "now": NOW, "invalid": 0, **fields}


def test_no_report_yet_is_ok() -> None:
    assert _triage_check(None).line() == "OK   dlq-report  no cinestream_dlq report yet"


def test_a_degraded_report_warns_with_its_share_threshold_and_where_to_read_it() -> None:
    check = _triage_check(
        _verdict(timedelta(minutes=5), id=2, share=100 / 1100, threshold=0.05, degraded=True)
    )
    assert check.status == "WARN"
    assert "degraded: invalid records are 9.09% of the traffic" in check.detail
    assert "threshold 5.00%, CINESTREAM_DLQ_DEGRADED_SHARE" in check.detail
    assert "/cinestream-quality/dlq/2" in check.detail
    assert "-> fix: " in check.line()


def test_a_healthy_report_is_ok_and_names_its_share() -> None:
    check = _triage_check(
        _verdict(timedelta(minutes=59), id=7, share=0.0012, threshold=0.05, degraded=False)
    )
    assert check.status == "OK"
    assert check.detail == "latest cinestream_dlq report 7: 0.12% invalid over the last hour " + (
        "(threshold 5.00%)"
    )


def test_a_degraded_verdict_older_than_two_hours_is_stale_not_degraded() -> None:
    check = _triage_check(
        _verdict(timedelta(hours=3, minutes=5), id=4, share=0.5, threshold=0.05, degraded=True)
    )
    assert check.status == "WARN"
    assert check.detail.startswith(
        "stale: the newest cinestream_dlq report (4) is 3 h 05 min old (more than 2 h"
    ), check.detail
    assert "its verdict (degraded) no longer holds" in check.detail
    assert "degraded: invalid records" not in check.detail
    assert "unpause cinestream_dlq" in check.line()
