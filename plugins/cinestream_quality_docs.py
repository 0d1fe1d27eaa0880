"""Airflow 3 plugin: cinestream's data quality inside the Airflow UI.

A FastAPI app mounted by the api-server at /cinestream-quality, with a navigation link
(Browse -> Data quality (cinestream)):

- ``/cinestream-quality/``: a compact view, per suite the latest run, pass/fail and each failed
  expectation with its observed value, linking to the Data Docs;
- ``/cinestream-quality/docs/``: the Great Expectations Data Docs, whose scripts and styles are
  served from the site itself (``cinestream.docs_assets``): nothing is loaded from a CDN.

Self-contained HTML (inline styles): the view works on a machine without internet access.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from cinestream.quality import docs_dir, read_summary
from cinestream.settings import Settings

PREFIX = "/cinestream-quality"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #d9dee3;
  vertical-align: top; }
.ok { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
code { background: #f1f3f5; padding: 0 .2rem; } ul { margin: 0; padding-left: 1.1rem; }
"""


def render_summary(summary: dict[str, Any], docs_href: str) -> str:
    """The compact quality view: one row per suite, its failed expectations listed."""
    rows = []
    for name, suite in sorted(summary.get("suites", {}).items()):
        ok = bool(suite.get("success"))
        start, end = ((suite.get("range") or []) + [None, None])[:2]
        scope = f"{start} .. {end}" if start else "every window"
        failures = "".join(
            f"<li><code>{escape(str(f['expectation']))}</code>"
            f"{escape(' (' + str(f['column']) + ')') if f.get('column') else ''}: observed "
            f"<code>{escape(str(f['observed']))}</code></li>"
            for f in suite.get("failures", [])
        )
        rows.append(
            f"<tr><td><a href='{docs_href}'>{escape(name)}</a></td>"
            f"<td class='{'ok' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</td>"
            f"<td>{escape(str(suite.get('run_at')))}</td><td>{escape(scope)}</td>"
            f"<td>{f'<ul>{failures}</ul>' if failures else ''}</td></tr>"
        )
    body = (
        "<table><tr><th>suite</th><th>result</th><th>latest run</th><th>windows</th>"
        "<th>failed expectations (observed value)</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>No validation yet: run the <code>cinestream_quality</code> DAG or "
        "<code>cinestream validate</code>.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>cinestream data quality</title>"
        f"<style>{STYLE}</style></head><body><h1>cinestream data quality</h1>"
        f"<p>Latest result of each Great Expectations suite; the full report is in the "
        f"<a href='{docs_href}'>Data Docs</a>.</p>{body}</body></html>"
    )


def create_docs_app(root: Path | None = None, settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="cinestream data quality", docs_url=None, redoc_url=None)

    def current() -> Settings:
        return settings or Settings()

    def site() -> Path:
        return root or docs_dir(current())

    @app.get("/", response_class=HTMLResponse)
    def summary() -> str:
        return render_summary(read_summary(current()), f"{PREFIX}/docs/")

    @app.get("/docs/", response_model=None)
    def index() -> HTMLResponse | FileResponse:
        page = site() / "index.html"
        if page.exists():
            return FileResponse(page)
        return HTMLResponse(
            "<h1>No data-quality report yet</h1><p>Run the <code>cinestream_quality</code> DAG "
            "or <code>cinestream validate</code> to build it.</p>"
        )

    @app.get("/docs/{path:path}", response_model=None)
    def asset(path: str) -> FileResponse:
        base = site().resolve()
        target = (base / path).resolve()
        if base not in target.parents or not target.is_file():
            raise HTTPException(status_code=404, detail=f"{path} is not part of the Data Docs")
        return FileResponse(target)

    return app


class CinestreamQualityDocsPlugin(AirflowPlugin):
    name = "cinestream_quality_docs"
    fastapi_apps = [
        {"app": create_docs_app(), "url_prefix": PREFIX, "name": "cinestream data quality"}
    ]
    external_views = [
        {
            "name": "Data quality (cinestream)",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "category": "browse",
        }
    ]
