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
