"""The dashboard in headless Chromium (Debian's), against a running API on the real database."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import REPO, Pipeline
from tests.integration.reports_fixture import record_degraded_dlq_report
from tests.integration.windows_fixture import eventually, sample_events, write_windows

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
OUTPUT = REPO / "test-output"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _stored_summary(api_url: str) -> dict[str, Any] | None:
    body: dict[str, Any] = httpx.get(f"{api_url}/metrics/summary").json()
    return body if body["windows"] else None


def test_dashboard_shows_the_apis_numbers(pipeline: Pipeline) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by infra/install-system-deps.sh"
    api_port, ui_port = _free_port(), _free_port()
    env = {"CINESTREAM_API_PORT": str(api_port), "CINESTREAM_DASHBOARD_PORT": str(ui_port)}
    api = pipeline.start_cli("api", extra_env=env, log_name="api")
    ui = pipeline.start_cli("dashboard", extra_env=env, log_name="dashboard")
    api_url, ui_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}"
    OUTPUT.mkdir(exist_ok=True)
    try:
        _wait_http(f"{api_url}/metrics/health")
        _wait_http(ui_url)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            # Empty store: the friendly hint from the API, not an error.
            page.goto(ui_url)
            page.get_by_text("cinestream process", exact=False).first.wait_for(timeout=60_000)
            page.screenshot(path=str(OUTPUT / "dashboard-empty.png"), full_page=True)

            write_windows(pipeline.settings, sample_events())
            summary = eventually(lambda: _stored_summary(api_url))
            page.reload()
            avg = page.locator("[data-testid='kpi-avg-rating']")
            avg.wait_for(state="attached", timeout=60_000)
            assert float(avg.inner_text()) == pytest.approx(summary["last_hour"]["avg_rating"])
            rpm = page.locator("[data-testid='kpi-ratings-per-minute']").inner_text()
            assert float(rpm) == pytest.approx(summary["last_hour"]["ratings_per_minute"])
            p = page.locator("[data-testid='kpi-p50-p95']").inner_text()
            assert (
                p == f"{summary['last_hour']['p50_rating']} / {summary['last_hour']['p95_rating']}"
            )
            assert page.locator("[data-testid='kpi-dlq']").inner_text() == str(
                summary["pipeline"]["dlq_count"]
            )
            # Three charts (count, average/percentiles, top movies) drew something.
            charts = page.locator("[data-testid='stVegaLiteChart']")
            charts.nth(2).wait_for(timeout=60_000)
            assert charts.count() == 3
            page.wait_for_timeout(1500)
            for i in range(3):
                assert charts.nth(i).locator("canvas, svg").count() >= 1
            page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)

            # cinestream_dlq's verdict from /metrics/health's data: degraded is a red banner;
            # the same report over two hours old is a warning that it no longer holds.
            report_id = _record_degraded_report(pipeline)
            try:
                page.reload()
                verdict = page.locator("[data-testid='dlq-verdict']")
                verdict.wait_for(state="attached", timeout=60_000)
                assert verdict.inner_text() == "degraded"
                alert = page.get_by_text("Degraded: invalid records are 9.09%", exact=False)
                assert alert.first.is_visible()
                pipeline.db(
                    "UPDATE dlq_reports SET run_at = now() - interval '3 hours' WHERE id = %s "
                    "RETURNING id",
                    (report_id,),
                )
                page.reload()
                verdict = page.locator("[data-testid='dlq-verdict']")
                verdict.wait_for(state="attached", timeout=60_000)
                assert verdict.inner_text() == "stale"
                assert page.get_by_text("no longer holds", exact=False).first.is_visible()
                assert page.get_by_text("Degraded:", exact=False).count() == 0
            finally:
                pipeline.db("DELETE FROM dlq_reports WHERE id = %s RETURNING id", (report_id,))
            browser.close()
    finally:
        for proc in (api, ui):
            os.killpg(proc.pid, 15)
            proc.wait(30)


def _record_degraded_report(pipeline: Pipeline) -> int:
    """A degraded cinestream_dlq report, written by the product's writer."""
    return record_degraded_dlq_report(pipeline.settings, "cinestream_dlq/dashboard_test")
