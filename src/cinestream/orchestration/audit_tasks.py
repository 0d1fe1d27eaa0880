"""The audit DAG's task bodies (``cinestream_audit``): audit a range with
:func:`cinestream.audit.run_audit` in the task's process, record the result, name the hours a
backfill must replace, and audit those again after the backfill.

A run's range is its Params ``start``/``end`` when given (a run by hand), else its data interval
(the daily run: the previous day).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cinestream.errors import CinestreamError
from cinestream.schemas import format_time

log = logging.getLogger("cinestream.orchestration")

HOUR_MS = 3_600_000


def audit_range(
    start: str | None, end: str | None, interval_start: datetime, interval_end: datetime
) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of a run: the Params when given (both), else the data interval.
    A bad Param is one line naming it."""
    from cinestream.timeparse import parse_range_bound

    if not start and not end:
        return int(interval_start.timestamp() * 1000), int(interval_end.timestamp() * 1000)
    if not start or not end:
        raise CinestreamError(
            "set both Params start and end (ISO-8601, e.g. 2026-11-30T00:00:00Z), or neither "
            "to audit the run's data interval"
        )
    bounds = []
    for name, text in (("start", start), ("end", end)):
        try:
            bounds.append(int(parse_range_bound(str(text)).timestamp() * 1000))
        except ValueError as exc:
            raise CinestreamError(f"Param {name}: {exc}") from exc
    if bounds[1] <= bounds[0]:
        raise CinestreamError(f"Param end {end} must be after Param start {start}")
    return bounds[0], bounds[1]


def repair_ranges(windows: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The hour-aligned ranges a backfill must replace so that every window ``(start_ms,
    size_ms)`` lies whole inside one (a backfill replaces only the windows inside its range);
    overlapping and adjacent hours are merged into one range, so one job per stretch."""
    hours = sorted(
        (start - start % HOUR_MS, -(-(start + size) // HOUR_MS) * HOUR_MS)
        for start, size in windows
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in hours:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def differing_windows(findings: Iterable[Any], sizes: Mapping[str, int]) -> list[tuple[int, int]]:
    """``(start_ms, size_ms)`` of each window an audit found different (UNVERIFIABLE ones are not
    repaired: what retention deleted a backfill cannot restore)."""
    return sorted(
        {
            (f.window_start_ms, sizes[f.window_type])
            for f in findings
            if f.confirmed and f.window_type in sizes
        }
    )


def _run(start_ms: int, end_ms: int) -> tuple[Any, Any]:
    """The audit of ``[start_ms, end_ms)`` in this process, its lines logged."""
    from cinestream.audit import run_audit
    from cinestream.orchestration.task_bodies import task_settings

    settings = task_settings()
    report = run_audit(settings, start_ms, end_ms)
    for line in report.lines():
        (log.info if line.startswith(("OK", "NOTE", "UNVERIFIABLE")) else log.error)("%s", line)
    return report, settings


def _record(settings: Any, report: Any, source: str, phase: str, repair: list[list[str]]) -> int:
    from cinestream.store import reports, schema
    from cinestream.store.connection import connect

    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        return reports.record_audit(
            conn,
            reports.AuditRun(
                source=source,
                phase=phase,
                range_start=_dt(report.start_ms),
                range_end=_dt(report.end_ms),
                ok=report.ok,
                windows=report.windows,
                ratings=report.ratings,
                differences=len(report.differences),
                repair=repair,
                lines=report.lines(),
            ),
        )


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def audit(
    params: Mapping[str, Any] | None,
    interval_start: datetime,
    interval_end: datetime,
    source: str,
) -> dict[str, Any]:
    """The first audit of a run: record it, and return the ranges a backfill must replace."""
    params = params or {}
    start_ms, end_ms = audit_range(
        params.get("start"), params.get("end"), interval_start, interval_end
    )
    log.info("auditing [%s, %s)", format_time(start_ms), format_time(end_ms))
    report, settings = _run(start_ms, end_ms)
    sizes = {spec.name: spec.size_ms for spec in settings.windows}
    ranges = repair_ranges(differing_windows(report.findings, sizes))
    repair = [[format_time(lo), format_time(hi)] for lo, hi in ranges]
    run_id = _record(settings, report, source, "audit", repair)
    if repair:
        log.warning(
            "%d windows differ: backfilling %s, then auditing them again",
            len(report.differences),
            ", ".join(f"[{a}, {b})" for a, b in repair),
        )
    return {"audit_id": run_id, "ok": report.ok, "repair": repair}


def backfill_arguments(result: Mapping[str, Any], lookback: str) -> list[list[str]]:
    """The backfill job's arguments for each range to repair (one mapped task each)."""
    return [
        ["--start", start, "--end", end, "--lookback", lookback]
        for start, end in result.get("repair", [])
    ]


def reaudit(result: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Audit each backfilled range again; fail (one line per range) when any still differs."""
    from cinestream.timeparse import parse_instant

    still = []
    for start, end in result.get("repair", []):
        lo = int(parse_instant(start).timestamp() * 1000)
        hi = int(parse_instant(end).timestamp() * 1000)
        report, settings = _run(lo, hi)
        _record(settings, report, source, "re-audit", [[start, end]])
        if not report.ok:
            still.append(f"[{start}, {end}): {len(report.differences)} windows still differ")
    if still:
        raise CinestreamError("the backfill did not repair " + "; ".join(still))
    repaired = len(result.get("repair", []))
    log.info("re-audit: %s", f"{repaired} backfilled ranges equal" if repaired else "nothing to do")
    return {"repaired": repaired}
