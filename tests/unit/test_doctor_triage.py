"""doctor's line on the newest cinestream_dlq report (the platform's degraded verdict)."""

from __future__ import annotations

from cinestream.doctor import _triage_check


def test_no_report_yet_is_ok() -> None:
    assert _triage_check(None).line() == "OK   dlq-report  no cinestream_dlq report yet"


def test_a_degraded_report_warns_with_its_share_threshold_and_where_to_read_it() -> None:
    check = _triage_check(
        {"id": 2, "share": 100 / 1100, "threshold": 0.05, "degraded": True, "invalid": 100}
    )
    assert check.status == "WARN"
    assert "degraded: invalid records are 9.09% of the traffic" in check.detail
    assert "threshold 5.00%, CINESTREAM_DLQ_DEGRADED_SHARE" in check.detail
    assert "/cinestream-quality/dlq/2" in check.detail
    assert "-> fix: " in check.line()


def test_a_healthy_report_is_ok_and_names_its_share() -> None:
    check = _triage_check({"id": 7, "share": 0.0012, "threshold": 0.05, "degraded": False})
    assert check.status == "OK"
    assert check.detail == "latest cinestream_dlq report 7: 0.12% invalid over the last hour " + (
        "(threshold 5.00%)"
    )
