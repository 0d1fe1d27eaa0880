"""The reports of the checks Airflow runs: audits (``audit_runs``), DLQ triage (``dlq_reports``)
and the Great Expectations suites (``quality_runs``); written by the DAGs' tasks, read by the
quality view in the Airflow UI and by ``/metrics/health`` (the latest DLQ report's verdict).

Tables are in :mod:`cinestream.store.schema`; every row is one finished check (insert only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# The most lines of one audit kept in its row: the view lists them; the task log has them all.
MAX_AUDIT_LINES = 500


@dataclass(frozen=True)
class AuditRun:
    """One audit step of a cinestream_audit run (``phase``: ``audit`` or ``re-audit``)."""

    source: str
    phase: str
    range_start: datetime
    range_end: datetime
    ok: bool
    windows: int
    ratings: int
    differences: int
    repair: list[list[str]] = field(default_factory=list)  # [[start, end], ...] backfilled
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DlqReport:
    """One cinestream_dlq report."""

    source: str
    dlq_topic: str
    topic_id: str | None
    start_offsets: dict[str, int]
    end_offsets: dict[str, int]
    invalid: int
    valid: int
    share: float
    threshold: float
    degraded: bool
    counted: dict[str, int]  # the store's valid/invalid totals when the report was made
    reasons: list[dict[str, Any]]
    keys: list[dict[str, Any]]


def record_audit(conn: psycopg.Connection[Any], run: AuditRun) -> int:
    """Insert one audit step; its id."""
    row = conn.execute(
        "INSERT INTO audit_runs (source, phase, range_start, range_end, ok, windows, ratings, "
        "differences, repair, lines) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "RETURNING id",
        (
            run.source,
            run.phase,
            run.range_start,
            run.range_end,
            run.ok,
            run.windows,
            run.ratings,
            run.differences,
            Jsonb(run.repair),
            Jsonb(run.lines[:MAX_AUDIT_LINES]),
        ),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def record_dlq_report(conn: psycopg.Connection[Any], report: DlqReport) -> int:
    """Insert one DLQ report; its id."""
    row = conn.execute(
        "INSERT INTO dlq_reports (source, dlq_topic, topic_id, start_offsets, end_offsets, "
        "invalid, valid, share, threshold, degraded, counted, reasons, keys) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            report.source,
            report.dlq_topic,
            report.topic_id,
            Jsonb(report.start_offsets),
            Jsonb(report.end_offsets),
            report.invalid,
            report.valid,
            report.share,
            report.threshold,
            report.degraded,
            Jsonb(report.counted),
            Jsonb(report.reasons),
            Jsonb(report.keys),
        ),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def record_quality(
    conn: psycopg.Connection[Any],
    source: str,
    suites: dict[str, bool],
    failures: dict[str, list[dict[str, Any]]],
    range_start: str | None,
    range_end: str | None,
) -> None:
    """Insert each suite's result of one validation."""
    with conn.transaction():
        for suite, ok in suites.items():
            conn.execute(
                "INSERT INTO quality_runs (source, suite, success, range_start, range_end, "
                "failures) VALUES (%s, %s, %s, %s, %s, %s)",
                (source, suite, ok, range_start, range_end, Jsonb(failures.get(suite, []))),
            )


def last_dlq_report(
    conn: psycopg.Connection[Any], dlq_topic: str | None = None
) -> dict[str, Any] | None:
    """The newest DLQ report (of ``dlq_topic`` when given), as a dict; None before the first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM dlq_reports WHERE %(t)s::text IS NULL OR dlq_topic = %(t)s "
            "ORDER BY id DESC LIMIT 1",
            {"t": dlq_topic},
        ).fetchone()


def recent_dlq_counts(
    conn: psycopg.Connection[Any], dlq_topic: str, period_s: float
) -> list[tuple[int, int]]:
    """``(invalid, valid)`` of the reports of ``dlq_topic`` made in the last ``period_s``."""
    rows = conn.execute(
        "SELECT invalid, valid FROM dlq_reports WHERE dlq_topic = %s "
        "AND run_at >= now() - make_interval(secs => %s) ORDER BY id",
        (dlq_topic, period_s),
    ).fetchall()
    return [(int(i), int(v)) for i, v in rows]


def dlq_verdict(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """What ``/metrics/health`` shows of the newest DLQ report: id, time, share, threshold,
    whether it marked the platform degraded, and the database's ``now`` (how old it is is told by
    the clock that stamped it); None before the first report. One indexed row."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, run_at, invalid, valid, share, threshold, degraded, now() AS now "
            "FROM dlq_reports ORDER BY id DESC LIMIT 1"
        ).fetchone()


def history(conn: psycopg.Connection[Any], since: datetime) -> dict[str, list[dict[str, Any]]]:
    """Every audit step, DLQ report and suite result since ``since``, oldest first (the quality
    view's strips)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        out["audits"] = cur.execute(
            "SELECT id, run_at, source, phase, range_start, range_end, ok, windows, ratings, "
            "differences, repair FROM audit_runs WHERE run_at >= %s ORDER BY run_at, id",
            (since,),
        ).fetchall()
        out["dlq"] = cur.execute(
            "SELECT id, run_at, source, invalid, valid, share, threshold, degraded, reasons "
            "FROM dlq_reports WHERE run_at >= %s ORDER BY run_at, id",
            (since,),
        ).fetchall()
        out["suites"] = cur.execute(
            "SELECT id, run_at, source, suite, success, range_start, range_end, failures "
            "FROM quality_runs WHERE run_at >= %s ORDER BY run_at, id",
            (since,),
        ).fetchall()
    return out


def audit_run(conn: psycopg.Connection[Any], run_id: int) -> dict[str, Any] | None:
    """One audit step with its lines (the view's detail page)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM audit_runs WHERE id = %s", (run_id,)).fetchone()


def dlq_report(conn: psycopg.Connection[Any], report_id: int) -> dict[str, Any] | None:
    """One DLQ report with its groups (the view's detail page)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM dlq_reports WHERE id = %s", (report_id,)).fetchone()
