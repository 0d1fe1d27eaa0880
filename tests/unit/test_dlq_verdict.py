"""The DLQ verdict expires: the rule (fixed clocks), and what /metrics/health's ``data`` and the
dashboard make of it. No services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cinestream.api.routes.health import data_state
from cinestream.dashboard.verdict import data_notice
from cinestream.orchestration.dlq_triage import VERDICT_MAX_AGE_S, age_text, verdict_state

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
BOUND = timedelta(seconds=VERDICT_MAX_AGE_S)


@pytest.mark.parametrize("degraded", [True, False])
def test_a_verdict_holds_up_to_the_bound_then_is_stale(degraded: bool) -> None:
    said = "degraded" if degraded else "ok"
    assert VERDICT_MAX_AGE_S == 2 * 3600
    assert verdict_state(degraded, NOW, NOW) == said
    assert verdict_state(degraded, NOW - BOUND, NOW) == said  # exactly the bound: still holds
    assert verdict_state(degraded, NOW - BOUND - timedelta(seconds=1), NOW) == "stale"
    assert verdict_state(degraded, NOW - timedelta(days=9), NOW) == "stale"
    # A report stamped ahead of the reader's clock (a clock step) is fresh, not stale.
    assert verdict_state(degraded, NOW + timedelta(minutes=3), NOW) == said
    assert verdict_state(degraded, NOW - timedelta(minutes=11), NOW, max_age_s=600) == "stale"


def test_age_text() -> None:
    assert age_text(59) == "0 min"
    assert age_text(12 * 60 + 59) == "12 min"
    assert age_text(3 * 3600 + 5 * 60) == "3 h 05 min"


def _report(age: timedelta, degraded: bool) -> dict[str, Any]:
    return {
        "id": 9,
        "run_at": NOW - age,
        "now": NOW,
        "invalid": 100,
        "valid": 1000,
        "share": 100 / 1100,
        "threshold": 0.05,
        "degraded": degraded,
    }


def test_health_data_carries_the_verdict_while_fresh() -> None:
    data = data_state(_report(timedelta(minutes=10), degraded=True))
    assert data["state"] == "degraded" and data["verdict"] == "degraded"
    assert (data["dlq_report"], data["age_s"], data["threshold"]) == (9, 600, 0.05)
    assert data["reason"].startswith("invalid records are 9.09% of the traffic")
    assert data_state(_report(timedelta(minutes=10), degraded=False))["state"] == "ok"
    assert data_state(None) == {"state": "unknown", "reason": "no cinestream_dlq report yet"}


def test_health_data_of_an_old_degraded_report_is_stale() -> None:
    data = data_state(_report(timedelta(hours=2, minutes=30), degraded=True))
    assert data["state"] == "stale" and data["verdict"] == "degraded"
    assert data["reason"] == (
        "the newest cinestream_dlq report is 2 h 30 min old (more than 2 h): its verdict "
        "(degraded) no longer holds; is cinestream_dlq paused or failing?"
    )


def test_the_dashboard_warns_of_a_stale_verdict_and_alarms_on_a_degraded_one() -> None:
    url = "http://airflow/cinestream-quality/"
    degraded = data_notice(data_state(_report(timedelta(minutes=1), degraded=True)), url)
    assert degraded is not None and degraded[0] == "error"
    assert degraded[1].startswith("Degraded: invalid records are 9.09%") and url in degraded[1]
    stale = data_notice(data_state(_report(timedelta(hours=5), degraded=True)), url)
    assert stale is not None and stale[0] == "warning"
    assert "no longer holds" in stale[1] and "Degraded" not in stale[1]
    assert data_notice(data_state(_report(timedelta(minutes=1), degraded=False)), url) is None
    assert data_notice({"state": "unknown", "reason": "x"}, url) is None
    assert data_notice(None, url) is None


def test_the_quality_views_banner_is_stale_not_degraded_for_an_old_report() -> None:
    import sys

    from tests.shared_stack import REPO

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from cinestream_quality_docs import render_history
    finally:
        sys.path.remove(str(REPO / "plugins"))
    report = {k: v for k, v in _report(timedelta(hours=3), degraded=True).items() if k != "now"}
    old = render_history({"dlq": [report]}, now=NOW)
    assert "STALE" in old and "DEGRADED" not in old and "/cinestream-quality/dlq/9" in old
    fresh = render_history({"dlq": [{**report, "run_at": NOW}]}, now=NOW)
    assert "DEGRADED" in fresh and "STALE" not in fresh
