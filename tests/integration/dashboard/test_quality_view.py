"""The quality view and the Data Docs in headless Chromium with no way out: every request that
is not to localhost is blocked, and the pages still render, failure and observed value included.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dashboard.test_app import CHROMIUM, OUTPUT, _free_port, _wait_http
from tests.integration.reports_fixture import degraded_dlq_report
from tests.shared_stack import REPO, Pipeline

pytestmark = pytest.mark.integration

MINUTE = 60_000
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


def _serve(app: object, port: int) -> object:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    return server


def test_quality_view_and_data_docs_render_offline(pipeline: Pipeline) -> None:
    from fastapi import FastAPI
    from playwright.sync_api import Route, sync_playwright

    # A validation with one failure: ratings for minutes that never got a window.
    start = int(time.time() * 1000) // MINUTE * MINUTE - 60 * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE)
    pipeline.process(check=True)
    pipeline.produce_historical(300, start + 10 * MINUTE, MINUTE, seed=3)
    assert pipeline.cli("validate").returncode == 1

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from cinestream_quality_docs import PREFIX, create_docs_app
    finally:
        sys.path.remove(str(REPO / "plugins"))
    root = FastAPI()
    root.mount(PREFIX, create_docs_app(settings=pipeline.settings))
    port = _free_port()
    server = _serve(root, port)
    base = f"http://127.0.0.1:{port}{PREFIX}"
    _wait_http(f"{base}/")
    blocked: list[str] = []

    def only_localhost(route: Route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    OUTPUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.route("**/*", only_localhost)
            # The compact view: each suite's latest result, the failure with its value.
            page.goto(f"{base}/")

            def row_of(suite: str) -> Any:
                return page.locator("tr").filter(
                    has=page.get_by_role("link", name=suite, exact=True)
                )

            row = row_of("continuity")
            assert "FAIL" in row.inner_text()
            assert "minute_with_ratings_has_a_window" in row.inner_text()
            assert "1 unexpected" in row.inner_text()
            for suite in ("window_metrics", "metrics_topic", "ratings"):
                assert "PASS" in row_of(suite).inner_text()
            page.screenshot(path=str(OUTPUT / "quality-view.png"), full_page=True)
            # The Data Docs: their scripts run (the bootstrap-table rows are drawn by jQuery and
            # bootstrap-table, served from the site), and the failed validation opens: a click on
            # its row (drawn by those scripts; newest run first) opens it, while the suite name
            # in the row links to the suite's expectations, which name the column too.
            page.get_by_role("link", name="Data Docs").click()
            page.wait_for_load_state("networkidle")
            assert page.evaluate("typeof jQuery") == "function"
            assert page.evaluate("typeof jQuery.fn.bootstrapTable") == "function"
            run = page.locator("td", has_text="cinestream-continuity").first
            run.wait_for(timeout=30_000)
            run.click()
            page.wait_for_load_state("networkidle")
            assert "/validations/continuity/" in page.url, page.url
            text = page.inner_text("body")
            assert re.search(r"Status:\s+Failed", text), text[:3000]
            assert "minute_with_ratings_has_a_window" in text, text[:3000]
            # The one minute of the 300 unprocessed ratings, and only it, has no window.
            assert "1 unexpected values found" in text, text[:3000]
            page.screenshot(path=str(OUTPUT / "data-docs-validation.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
    assert blocked == [], blocked
    assert Path(pipeline.settings.state_dir / "gx").exists()


def _seed_reports(pipeline: Pipeline) -> tuple[int, int, str]:
    """An audit with a difference and a degraded DLQ report, written by the product's own
    writers (what cinestream_audit's and cinestream_dlq's tasks call)."""
    from datetime import UTC, datetime, timedelta

    import psycopg

    from cinestream.schemas import format_time
    from cinestream.store import reports, schema

    hour = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    diff = (
        f"DIFF tumbling_1min {format_time(hour)} postgres: count 999 != 1000 "
        "(its ratings: p0 0..999)"
    )
    run = reports.AuditRun(
        source="cinestream_audit/manual__quality_view_test",
        phase="audit",
        range_start=hour,
        range_end=hour + timedelta(hours=1),
        ok=False,
        windows=60,
        ratings=60_000,
        differences=1,
        repair=[[format_time(hour), format_time(hour + timedelta(hours=1))]],
        lines=[diff, "FAIL audit [...]: 60 windows, 60000 ratings recomputed: 1 differ"],
    )
    report = degraded_dlq_report(
        pipeline.settings,
        "cinestream_dlq/asset_triggered__quality_view_test",
        reasons=[
            {
                "reason": "rating must be one of 0.5, 1.0, ..., 5.0",
                "count": 100,
                "example": "rating must be one of 0.5, 1.0, ..., 5.0, got 7.0",
            }
        ],
        keys=[
            {
                "key": "producer-q",
                "count": 100,
                "reasons": {"rating must be one of 0.5, 1.0, ..., 5.0": 100},
            }
        ],
    )
    with psycopg.connect(pipeline.settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        return reports.record_audit(conn, run), reports.record_dlq_report(conn, report), diff


def test_quality_view_shows_an_audit_and_a_dlq_report_that_open(pipeline: Pipeline) -> None:
    from fastapi import FastAPI
    from playwright.sync_api import sync_playwright

    audit_id, report_id, diff = _seed_reports(pipeline)
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from cinestream_quality_docs import PREFIX, create_docs_app
    finally:
        sys.path.remove(str(REPO / "plugins"))
    root = FastAPI()
    root.mount(PREFIX, create_docs_app(settings=pipeline.settings))
    port = _free_port()
    server = _serve(root, port)
    base = f"http://127.0.0.1:{port}{PREFIX}"
    _wait_http(f"{base}/")
    OUTPUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(f"{base}/")

            def strip_of(label: str) -> Any:
                cell = page.locator("td").filter(has_text=re.compile(f"^{label}$"))
                return page.locator("tr").filter(has=cell)

            # The audit strip: a red mark for the audit with a difference; it opens the audit.
            mark = strip_of("audit").locator(f"a[href='{PREFIX}/audits/{audit_id}']")
            assert mark.get_attribute("class") == "failed"
            assert "1 differ" in (mark.get_attribute("title") or "")
            page.screenshot(path=str(OUTPUT / "quality-view-history.png"), full_page=True)
            mark.click()
            page.wait_for_url(f"**{PREFIX}/audits/{audit_id}")
            text = page.inner_text("body")
            assert f"cinestream audit {audit_id}" in text and "FAIL" in text, text[:2000]
            assert diff in text, text[:2000]

            # The DLQ strip: a red mark for the degraded report, and the banner; both open it.
            page.go_back()
            mark = strip_of("DLQ reports").locator(f"a[href='{PREFIX}/dlq/{report_id}']")
            assert mark.get_attribute("class") == "failed"
            assert "100 invalid, share 9.09%" in (mark.get_attribute("title") or "")
            banner = page.locator(".banner")
            assert "DEGRADED" in banner.inner_text() and "9.09%" in banner.inner_text()
            mark.click()
            page.wait_for_url(f"**{PREFIX}/dlq/{report_id}")
            text = page.inner_text("body")
            assert f"cinestream DLQ report {report_id}" in text and "DEGRADED" in text
            assert "rating must be one of 0.5, 1.0, ..., 5.0" in text and "producer-q" in text
            page.screenshot(path=str(OUTPUT / "quality-view-dlq-report.png"), full_page=True)
            page.go_back()
            banner.get_by_role("link", name=f"DLQ report {report_id}").click()
            page.wait_for_url(f"**{PREFIX}/dlq/{report_id}")
            browser.close()
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        # Other tests on this stack read the newest DLQ report (doctor, /metrics/health).
        pipeline.db("DELETE FROM dlq_reports WHERE id = %s RETURNING id", (report_id,))
        pipeline.db("DELETE FROM audit_runs WHERE id = %s RETURNING id", (audit_id,))
