"""Airflow 3 plugin: cinestream's data quality inside the Airflow UI.

A FastAPI app mounted by the api-server at /cinestream-quality, with a navigation link
(Browse -> Data quality (cinestream)):

- ``/cinestream-quality/``: a compact view, per suite the latest run, pass/fail and each failed
  expectation with its observed value, linking to the Data Docs; then the last 24 hours as
  strips of pass/fail per suite, per audit (``cinestream_audit``) and of the DLQ reports
  (``cinestream_dlq``), each mark linking to its Airflow run or its report;
- ``/cinestream-quality/audits/{id}`` and ``/cinestream-quality/dlq/{id}``: one audit with its
  differing windows, one DLQ report with its reasons and producer keys;
- ``/cinestream-quality/docs/``: the Great Expectations Data Docs, whose scripts and styles are
  served from the site itself (``cinestream.docs_assets``): nothing is loaded from a CDN.

Self-contained HTML (inline styles): the view works on a machine without internet access.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from cinestream.orchestration.dlq_triage import VERDICT_MAX_AGE_S, verdict_state
from cinestream.quality import docs_dir, read_summary
from cinestream.settings import Settings

HISTORY = timedelta(hours=24)

PREFIX = "/cinestream-quality"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #d9dee3;
  vertical-align: top; }
.ok { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
code { background: #f1f3f5; padding: 0 .2rem; } ul { margin: 0; padding-left: 1.1rem; }
.strip { display: flex; gap: 2px; flex-wrap: wrap; }
.strip a { display: inline-block; width: 12px; height: 20px; border-radius: 2px; }
.strip a.pass { background: #34a853; } .strip a.failed { background: #d93025; }
.banner { background: #fce8e6; border: 1px solid #d93025; padding: .6rem; margin: 1rem 0; }
"""


def render_summary(
    summary: dict[str, Any], docs_href: str, history: dict[str, list[dict[str, Any]]] | None = None
) -> str:
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
    history_html = render_history(history) if history is not None else ""
    return page(
        "cinestream data quality",
        f"<p>Latest result of each Great Expectations suite; the full report is in the "
        f"<a href='{docs_href}'>Data Docs</a>.</p>{body}{history_html}",
    )


def page(title: str, body: str) -> str:
    """A self-contained HTML page."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def run_href(source: str) -> str:
    """The Airflow UI page of the DAG run a result came from (``dag_id/run_id``)."""
    from urllib.parse import quote

    dag_id, _, run_id = source.partition("/")
    if not run_id:
        return "#"
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _when(value: Any) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "?"


def strip(
    rows: list[dict[str, Any]],
    ok: Callable[[dict[str, Any]], bool],
    title: Callable[[dict[str, Any]], str],
    href: Callable[[dict[str, Any]], str],
) -> str:
    """One mark per result, oldest first: green passed, red failed; each links to its page."""
    marks = "".join(
        f"<a class='{'pass' if ok(r) else 'failed'}' href='{escape(href(r))}' "
        f"title='{escape(title(r))}'></a>"
        for r in rows
    )
    return f"<div class='strip'>{marks}</div>" if rows else "<em>no result</em>"


def render_history(history: dict[str, list[dict[str, Any]]], now: datetime | None = None) -> str:
    """The last 24 hours: a strip per suite, per audit phase and of the DLQ reports, then the
    latest audit's differing windows and the latest DLQ report's verdict (stale when it is too
    old to hold, as in ``/metrics/health``)."""
    rows = []
    suites: dict[str, list[dict[str, Any]]] = {}
    for r in history.get("suites", []):
        suites.setdefault(r["suite"], []).append(r)
    for name, results in sorted(suites.items()):
        rows.append(
            f"<tr><td>suite {escape(name)}</td><td>"
            + strip(
                results,
                lambda r: bool(r["success"]),
                lambda r: f"{_when(r['run_at'])} {'PASS' if r['success'] else 'FAIL'}",
                lambda r: run_href(r["source"]),
            )
            + "</td></tr>"
        )
    audits = history.get("audits", [])
    for phase in ("audit", "re-audit"):
        results = [a for a in audits if a["phase"] == phase]
        rows.append(
            f"<tr><td>{'audit' if phase == 'audit' else 'audit after backfill'}</td><td>"
            + strip(
                results,
                lambda a: bool(a["ok"]),
                lambda a: (
                    f"{_when(a['run_at'])} [{_when(a['range_start'])}, "
                    f"{_when(a['range_end'])}) {a['differences']} differ"
                ),
                lambda a: f"{PREFIX}/audits/{a['id']}",
            )
            + "</td></tr>"
        )
    dlq = history.get("dlq", [])
    rows.append(
        "<tr><td>DLQ reports</td><td>"
        + strip(
            dlq,
            lambda d: not d["degraded"],
            lambda d: f"{_when(d['run_at'])} {d['invalid']} invalid, share {d['share']:.2%}",
            lambda d: f"{PREFIX}/dlq/{d['id']}",
        )
        + "</td></tr>"
    )
    body = "<h2>Last 24 hours</h2><table><tr><th>check</th><th>results (oldest first)</th></tr>"
    body += "".join(rows) + "</table>"
    state = (
        verdict_state(dlq[-1]["degraded"], dlq[-1]["run_at"], now or datetime.now(tz=UTC))
        if dlq
        else None
    )
    if state == "degraded":
        last = dlq[-1]
        body += (
            f"<div class='banner'><b>DEGRADED</b>: invalid records are {last['share']:.2%} of "
            f"the traffic (threshold {last['threshold']:.2%}); "
            f"<a href='{PREFIX}/dlq/{last['id']}'>DLQ report {last['id']}</a></div>"
        )
    elif state == "stale":
        last = dlq[-1]
        body += (
            f"<p><b>STALE</b>: the newest <a href='{PREFIX}/dlq/{last['id']}'>DLQ report "
            f"{last['id']}</a> is more than {VERDICT_MAX_AGE_S // 3600} h old: its verdict "
            f"({'degraded' if last['degraded'] else 'ok'}) no longer holds; is cinestream_dlq "
            "paused or failing?</p>"
        )
    failed = [a for a in audits if not a["ok"]]
    if failed:
        last = failed[-1]
        body += (
            f"<p>Latest audit with differences: <a href='{PREFIX}/audits/{last['id']}'>audit "
            f"{last['id']}</a> of [{_when(last['range_start'])}, {_when(last['range_end'])}): "
            f"{last['differences']} "
            + ("window differs" if last["differences"] == 1 else "windows differ")
            + "; backfilled: "
            + escape(", ".join(f"[{a}, {b})" for a, b in last["repair"]) or "nothing")
            + "</p>"
        )
    return body


def render_audit(run: dict[str, Any]) -> str:
    """One audit step: its verdict, the ranges backfilled, and its lines (every DIFF, and the
    OPEN and UNREPAIRABLE windows the run did not backfill)."""
    lines = "".join(
        f"<li class='{'fail' if line.startswith(('DIFF', 'FAIL', 'OPEN', 'UNREP')) else ''}'>"
        f"<code>{escape(line)}</code></li>"
        for line in run["lines"]
    )
    repair = ", ".join(f"[{a}, {b})" for a, b in run["repair"]) or "nothing"
    return page(
        f"cinestream audit {run['id']}",
        f"<p class='{'ok' if run['ok'] else 'fail'}'>{'PASS' if run['ok'] else 'FAIL'}</p>"
        f"<p>{escape(run['phase'])} of [{_when(run['range_start'])}, {_when(run['range_end'])})"
        f" at {_when(run['run_at'])}: {run['windows']} windows, {run['ratings']} ratings, "
        f"{run['differences']} differ; backfilled: {escape(repair)}; "
        f"<a href='{escape(run_href(run['source']))}'>Airflow run</a></p><ul>{lines}</ul>",
    )


def render_dlq(report: dict[str, Any]) -> str:
    """One DLQ report: the verdict, then the records by reason and by producer key."""
    reasons = "".join(
        f"<tr><td>{g['count']}</td><td>{escape(g['reason'])}</td>"
        f"<td><code>{escape(g.get('example', ''))}</code></td></tr>"
        for g in report["reasons"]
    )
    keys = "".join(
        f"<tr><td>{g['count']}</td><td><code>{escape(g['key'])}</code></td>"
        f"<td>{escape('; '.join(f'{r}: {n}' for r, n in g.get('reasons', {}).items()))}</td></tr>"
        for g in report["keys"]
    )
    word = "DEGRADED" if report["degraded"] else "OK"
    return page(
        f"cinestream DLQ report {report['id']}",
        f"<p class='{'fail' if report['degraded'] else 'ok'}'>{word}</p>"
        f"<p>{report['invalid']} invalid and {report['valid']} valid records in "
        f"{escape(report['dlq_topic'])} offsets {escape(str(report['start_offsets']))} .. "
        f"{escape(str(report['end_offsets']))}; invalid share over the last hour "
        f"{report['share']:.2%} (threshold {report['threshold']:.2%}); "
        f"<a href='{escape(run_href(report['source']))}'>Airflow run</a></p>"
        "<h2>By reason</h2><table><tr><th>records</th><th>reason</th><th>example</th></tr>"
        f"{reasons}</table><h2>By producer key</h2><table><tr><th>records</th><th>key</th>"
        f"<th>reasons</th></tr>{keys}</table>",
    )


def create_docs_app(root: Path | None = None, settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="cinestream data quality", docs_url=None, redoc_url=None)

    def current() -> Settings:
        return settings or Settings()

    def site() -> Path:
        return root or docs_dir(current())

    def store(read: Callable[[Any], Any]) -> Any:
        from cinestream.store import schema
        from cinestream.store.connection import connect

        with connect(current().resolved_database_url) as conn:
            schema.ensure_schema(conn)
            return read(conn)

    @app.get("/", response_class=HTMLResponse)
    def summary() -> str:
        from cinestream.errors import ServiceUnavailable
        from cinestream.store import reports

        since = datetime.now(tz=UTC) - HISTORY
        try:
            history = store(lambda conn: reports.history(conn, since))
        except ServiceUnavailable as exc:
            return render_summary(read_summary(current()), f"{PREFIX}/docs/") + (
                f"<p class='fail'>History unavailable: {escape(str(exc))}</p>"
            )
        return render_summary(read_summary(current()), f"{PREFIX}/docs/", history)

    @app.get("/audits/{run_id}", response_class=HTMLResponse)
    def audit(run_id: int) -> str:
        from cinestream.store import reports

        run = store(lambda conn: reports.audit_run(conn, run_id))
        if run is None:
            raise HTTPException(status_code=404, detail=f"no audit {run_id}")
        return render_audit(run)

    @app.get("/dlq/{report_id}", response_class=HTMLResponse)
    def dlq(report_id: int) -> str:
        from cinestream.store import reports

        report = store(lambda conn: reports.dlq_report(conn, report_id))
        if report is None:
            raise HTTPException(status_code=404, detail=f"no DLQ report {report_id}")
        return render_dlq(report)

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
