"""`cinestream validate` on the real stack, and the Airflow plugin serving the Data Docs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import REPO, Pipeline

pytestmark = pytest.mark.integration

MINUTE = 60_000


def test_validate_passes_then_fails_with_the_observed_value(pipeline: Pipeline) -> None:
    start = int(time.time() * 1000) // MINUTE * MINUTE - 60 * MINUTE
    pipeline.produce_historical(3_000, start, 3 * MINUTE)
    pipeline.process(check=True)

    ok = pipeline.cli("validate")
    assert ok.returncode == 0, ok.stdout[-3000:]
    for suite in ("window_metrics", "metrics_topic", "continuity", "ratings"):
        assert f"OK   suite {suite}" in ok.stdout
    # Only its result lines: Great Expectations' own INFO logging stays quiet without -v.
    assert "great_expectations" not in ok.stdout, ok.stdout
    assert len(ok.stdout.splitlines()) <= 12, ok.stdout

    # The seed's failure: ratings produced for minutes that never got a window.
    pipeline.produce_historical(500, start + 10 * MINUTE, MINUTE, seed=3)
    missing = pipeline.cli("validate")
    assert missing.returncode == 1
    line = next(x for x in missing.stdout.splitlines() if x.startswith("FAIL continuity"))
    assert "minute_with_ratings_has_a_window" in line and "1 unexpected" in line
    assert "np." not in missing.stdout and "Timestamp(" not in missing.stdout, line

    bad_range = pipeline.cli(
        "validate", "--start", "2025-01-02T00:00:00Z", "--end", "2025-01-01T00:00:00Z"
    )
    assert bad_range.returncode == 2 and "--end must be after --start" in bad_range.stdout


def test_plugin_serves_the_data_docs(pipeline: Pipeline) -> None:
    start = int(time.time() * 1000) // MINUTE * MINUTE - 60 * MINUTE
    pipeline.produce_historical(1_000, start, MINUTE)
    pipeline.process(check=True)
    assert pipeline.cli("validate").returncode == 0

    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from cinestream_quality_docs import PREFIX, CinestreamQualityDocsPlugin
    finally:
        sys.path.remove(str(REPO / "plugins"))
    (mounted,) = CinestreamQualityDocsPlugin.fastapi_apps
    assert mounted["url_prefix"] == PREFIX == "/cinestream-quality"
    client = TestClient(mounted["app"])
    # The compact view: every suite with its latest result, linking to the Data Docs.
    view = client.get("/")
    assert view.status_code == 200
    for suite in ("window_metrics", "metrics_topic", "continuity", "ratings"):
        assert suite in view.text
    # The latest results (the 24-hour strips below them also show other tests' failed runs on
    # a shared stack, whose history tables a test's truncate keeps).
    latest = view.text.split("Last 24 hours")[0]
    assert "Last 24 hours" in view.text
    assert "PASS" in latest and "FAIL" not in latest
    assert f"{PREFIX}/docs/" in view.text
    page = client.get("/docs/")
    assert page.status_code == 200
    for suite in ("window_metrics", "metrics_topic", "continuity", "ratings"):
        assert suite in page.text
    # Served from the site itself: no CDN, the vendored scripts are there.
    assert "cdn.jsdelivr" not in page.text and "code.jquery.com" not in page.text
    assert client.get("/docs/static/vendor/jquery@3.7.1/dist/jquery.min.js").status_code == 200
    assert client.get("/docs/../../secrets/postgres_password").status_code == 404
    assert Path(pipeline.settings.state_dir / "gx").exists()
