"""The audit DAG's task bodies (``cinestream_audit``): audit a range with
:func:`cinestream.audit.run_audit` in the task's process, record the result, name the hours a
backfill must replace, and audit those again after the backfill.

A run's range is its Params ``start``/``end`` when given (a run by hand), else its data interval
(the daily run: the previous day).

What a backfill cannot repair is said, not retried. A backfill replaces only windows the
stream's watermark has closed, and keeps a window whose recomputation holds fewer ratings than
the store counted in it (it never throws away ratings Kafka no longer holds). So:

- the daily run starts at 00:00, while the last minutes of the day are still open (allowed
  lateness): the audit first waits, at most :data:`CLOSE_GRACE_S` past the range end plus the
  allowed lateness, for the store's watermark to close the whole range; a differing window still
  open after that is an ``OPEN`` line and is not backfilled (a backfill would race the stream);
- a differing window where PostgreSQL holds more ratings than the topic still has (stored count
  plus late ratings > recomputed: retention deleted records, or a row changed by hand) is an
  ``UNREPAIRABLE`` line and is not backfilled.

The run then ends, after the backfill and re-audit of whatever could be repaired, with one line
naming those windows and why (:func:`unrepaired_line`), and fails: the data still differs.
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
# How long past the range end plus the allowed lateness the audit waits for the stream's
# watermark to close the range (a live stream closes it a trigger interval after the lateness);
# a stream that is not running does not close it, so the audit goes on after this.
CLOSE_GRACE_S = 180
CLOSE_POLL_S = 10
# The most windows one line names (the audit's record has every line).
NAMED = 5


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
    """``(start_ms, size_ms)`` of each window an audit found different that a backfill can
    repair (UNVERIFIABLE and PENDING ones are no differences; see :func:`cannot_repair`)."""
    return sorted(
        {
            (f.window_start_ms, sizes[f.window_type])
            for f in findings
            if f.confirmed and f.window_type in sizes and cannot_repair(f) is None
        }
    )


def cannot_repair(finding: Any) -> str | None:
    """Why a backfill cannot repair a differing window (None: it can). ``open``: the stream's
    watermark had not closed it (a backfill replaces only closed windows, and would race the
    stream); ``more``: PostgreSQL holds more ratings (count plus late) than the topic still has
    (a backfill keeps such a window); ``topic-only``: only the metrics topic has the window (no
    rating in the topic, no row: a backfill has nothing to publish over it)."""
    stored, recomputed = finding.stored, finding.recomputed
    if finding.open:
        return "open"
    if stored is not None and recomputed is not None and stored > recomputed:
        return "more"
    if stored is None and recomputed == 0 and finding.where == "metrics topic":
        return "topic-only"
    return None


def close_wait_s(end_ms: int, watermark_ms: int | None, now_ms: int, lateness_ms: int) -> float:
    """How long the audit may still wait for the stream's watermark to close ``end_ms``: until
    :data:`CLOSE_GRACE_S` past ``end_ms`` plus the allowed lateness; 0 once it is closed, or for
    a range the wall clock has not ended (nothing closes it soon)."""
    if (watermark_ms is not None and watermark_ms >= end_ms) or now_ms < end_ms:
        return 0.0
    return max(0.0, (end_ms + lateness_ms + CLOSE_GRACE_S * 1000 - now_ms) / 1000)


def unrepaired_line(left: Mapping[str, list[str]], still: list[str], audit_id: int | None) -> str:
    """The one line a run ends with when it leaves differing windows: each kind, the windows (up
    to :data:`NAMED`) and why; ``left``: ``{"open": [...], "more": [...]}``."""
    parts = []
    if still:
        parts.append(f"the backfill did not repair {_named(still)}")
    if left.get("more"):
        parts.append(
            f"{_named(left['more'])}: PostgreSQL holds more ratings than the topic still has "
            "(retention deleted records, or a row was changed by hand); a backfill keeps such a "
            "window, as it never throws away ratings Kafka no longer holds: check those ratings' "
            "source, then correct the rows or accept them"
        )
    if left.get("topic-only"):
        parts.append(
            f"{_named(left['topic-only'])}: only the metrics topic has it (no rating in the topic, "
            "no row in PostgreSQL); a backfill has nothing to publish over it: delete its key "
            "from the topic (a tombstone) if it should not exist"
        )
    if left.get("open"):
        parts.append(
            f"{_named(left['open'])}: still open when audited (the stream's watermark had not "
            "closed it); a backfill replaces only closed windows and would race the stream: run "
            "cinestream_audit over it again once the watermark has passed"
        )
    where = f" (audit {audit_id}, Browse -> Data quality (cinestream))" if audit_id else ""
    return "not repaired: " + "; ".join(parts) + where


def _named(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    noun = "window" if len(items) == 1 else "windows"
    return f"{len(items)} {noun} ({', '.join(items[:NAMED])}{more})"


def _window_text(finding: Any) -> str:
    return f"{finding.window_type} {format_time(finding.window_start_ms)}"


def left_alone(findings: Iterable[Any]) -> dict[str, list[str]]:
    """The differing windows a backfill cannot repair, by reason (:func:`cannot_repair`), each
    named once (``tumbling_1min 2026-11-30T23:59:00.000Z``)."""
    left: dict[str, list[str]] = {"open": [], "more": [], "topic-only": []}
    for f in findings:
        why = cannot_repair(f) if f.confirmed else None
        if why is not None and _window_text(f) not in left[why]:
            left[why].append(_window_text(f))
    return left


def _left_lines(left: Mapping[str, list[str]], closed_until_ms: int | None) -> list[str]:
    """The lines an audit's record gets for the windows it leaves (the view lists them)."""
    mark = format_time(closed_until_ms) if closed_until_ms is not None else "none"
    why = {
        "open": f"OPEN {{}}: differs while still open (watermark {mark}): not backfilled",
        "more": "UNREPAIRABLE {}: PostgreSQL holds more ratings than the topic: not backfilled",
        "topic-only": "UNREPAIRABLE {}: only the metrics topic has it: not backfilled",
    }
    return [why[kind].format(w) for kind, windows in left.items() for w in windows]


def _wait_for_close(end_ms: int) -> None:
    """Wait (bounded, :func:`close_wait_s`) for the store's watermark to close ``end_ms``."""
    import time

    from cinestream.orchestration.task_bodies import task_settings
    from cinestream.store import reads
    from cinestream.store.connection import connect

    settings = task_settings()
    lateness_ms = settings.allowed_lateness_s * 1000
    while True:
        with connect(settings.resolved_database_url) as conn:
            watermark = reads.stream_snapshot(conn, end_ms, end_ms).watermark_ms
        wait = close_wait_s(end_ms, watermark, int(time.time() * 1000), lateness_ms)
        if wait <= 0:
            return
        log.info(
            "waiting up to %.0f s for the stream's watermark (%s) to close the range's end %s",
            wait,
            format_time(watermark) if watermark is not None else "none",
            format_time(end_ms),
        )
        time.sleep(min(wait, CLOSE_POLL_S))


def _run(start_ms: int, end_ms: int) -> tuple[Any, Any]:
    """The audit of ``[start_ms, end_ms)`` in this process, its lines logged."""
    from cinestream.audit import run_audit
    from cinestream.orchestration.task_bodies import task_settings

    settings = task_settings(kafka_role="auditor")
    report = run_audit(settings, start_ms, end_ms)
    for line in report.lines():
        quiet = line.startswith(("OK", "NOTE", "UNVERIFIABLE", "PENDING"))
        (log.info if quiet else log.error)("%s", line)
    return report, settings


def _record(
    settings: Any,
    report: Any,
    source: str,
    phase: str,
    repair: list[list[str]],
    extra: list[str] | None = None,
) -> int:
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
                lines=[*(extra or []), *report.lines()],
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
    _wait_for_close(end_ms)
    log.info("auditing [%s, %s)", format_time(start_ms), format_time(end_ms))
    report, settings = _run(start_ms, end_ms)
    sizes = {spec.name: spec.size_ms for spec in settings.windows}
    ranges = repair_ranges(differing_windows(report.findings, sizes))
    repair = [[format_time(lo), format_time(hi)] for lo, hi in ranges]
    left = left_alone(report.findings)
    extra = _left_lines(left, report.closed_until_ms)
    for line in extra:
        log.error("%s", line)
    run_id = _record(settings, report, source, "audit", repair, extra)
    if repair:
        log.warning(
            "windows differ: backfilling %s, then auditing them again",
            ", ".join(f"[{a}, {b})" for a, b in repair),
        )
    return {"audit_id": run_id, "ok": report.ok, "repair": repair, "left": left}


def backfill_arguments(result: Mapping[str, Any], lookback: str) -> list[list[str]]:
    """The backfill job's arguments for each range to repair (one mapped task each)."""
    return [
        ["--start", start, "--end", end, "--lookback", lookback]
        for start, end in result.get("repair", [])
    ]


def reaudit(result: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Audit each backfilled range again; end with one line (and fail) when a window still
    differs: one the backfill should have repaired, or one the first audit left alone (open, or
    holding more than the topic) or the re-audit finds so (:func:`unrepaired_line`)."""
    from cinestream.timeparse import parse_instant

    still: list[str] = []
    left: dict[str, list[str]] = {k: list(v) for k, v in (result.get("left") or {}).items()}
    for start, end in result.get("repair", []):
        lo = int(parse_instant(start).timestamp() * 1000)
        hi = int(parse_instant(end).timestamp() * 1000)
        report, settings = _run(lo, hi)
        sizes = {spec.name: spec.size_ms for spec in settings.windows}
        for f in report.differences:
            if f.window_type in sizes and cannot_repair(f) is None:
                if _window_text(f) not in still:
                    still.append(_window_text(f))
        for why, windows in left_alone(report.findings).items():
            left.setdefault(why, []).extend(w for w in windows if w not in left[why])
        _record(settings, report, source, "re-audit", [[start, end]])
    if still or any(left.values()):
        raise CinestreamError(unrepaired_line(left, still, result.get("audit_id")))
    repaired = len(result.get("repair", []))
    log.info("re-audit: %s", f"{repaired} backfilled ranges equal" if repaired else "nothing to do")
    return {"repaired": repaired}
