"""Running an audit: the store's snapshot, the records of ``ratings`` up to its end offsets, the
metrics topic between two snapshots, and the report (see :mod:`cinestream.audit`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cinestream.audit.compare import (
    FIELDS,
    PENDING_WAIT_S,
    Finding,
    Key,
    Versions,
    compare_window,
    publication_exact,
    settle_publication,
)
from cinestream.audit.rules import Recomputed, parse_rating, window_starts
from cinestream.settings import Settings
from cinestream.windows import WindowSpec

log = logging.getLogger("cinestream.audit")

PROGRESS_EVERY = 250_000


@dataclass
class AuditReport:
    """What ``cinestream audit`` found."""

    start_ms: int
    end_ms: int
    windows: int = 0
    ratings: int = 0
    invalid: int = 0
    read: dict[int, tuple[int, int]] = field(default_factory=dict)
    deleted: dict[int, int] = field(default_factory=dict)
    unprocessed: int = 0
    # Windows ending after this were still open at the snapshot (the stream may add to them).
    closed_until_ms: int | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> list[Finding]:
        return [f for f in self.findings if f.confirmed]

    @property
    def pending(self) -> list[Finding]:
        return [f for f in self.findings if f.pending]

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        from cinestream.schemas import format_time

        out = [f.line() for f in self.findings]
        out += [f"NOTE {n}" for n in self.notes]
        span = f"[{format_time(self.start_ms)}, {format_time(self.end_ms)})"
        read = ", ".join(f"p{p} {lo}..{hi - 1}" for p, (lo, hi) in sorted(self.read.items()))
        summary = (
            f"audit {span}: {self.windows} windows, {self.ratings} ratings recomputed from "
            f"{read or 'no records'}"
        )
        if self.differences:
            out.append(f"FAIL {summary}: {len(self.differences)} differ")
        elif self.pending:
            out.append(
                f"OK {summary}: no window differs ({len(self.pending)} not yet in the metrics "
                "topic: PENDING)"
            )
        else:
            out.append(f"OK {summary}: every window equals its recomputation")
        return out


def _accumulate(
    messages: Iterable[Any],
    specs: list[WindowSpec],
    start_ms: int,
    end_ms: int,
    windows: dict[Key, Recomputed],
    report: AuditReport,
) -> None:
    for msg in messages:
        rating = parse_rating(msg.value())
        if rating is None:
            report.invalid += 1
            continue
        _user, movie, half, ts = rating
        for spec in specs:
            for ws in window_starts(spec, ts):
                if start_ms <= ws < end_ms:
                    windows.setdefault((spec.name, ws), Recomputed()).add(
                        msg.partition(), msg.offset(), movie, half
                    )


def _read_ratings(settings: Settings, ranges: dict[int, tuple[int, int]], on_batch: Any) -> None:
    """Consume ``[lo, hi)`` of each partition of the ratings topic, passing message batches."""
    from cinestream.kafka.read import read_batches

    starts = {p: lo for p, (lo, _) in ranges.items()}
    ends = {p: hi for p, (_, hi) in ranges.items()}
    total = sum(max(hi - lo, 0) for lo, hi in ranges.values())
    done, began, next_log = 0, time.monotonic(), PROGRESS_EVERY
    # Records deleted by retention while they are read are an error, not a silent jump forward
    # (which would show their windows as differing).
    batches = read_batches(
        settings, settings.ratings_topic, starts, ends, 60, "cinestream-audit", "error"
    )
    for batch in batches:
        on_batch(batch)
        done += len(batch)
        if done >= next_log:
            rate = done / max(time.monotonic() - began, 1e-6)
            log.info(
                "audit: read %s of %s records (%s/s)", f"{done:,}", f"{total:,}", f"{rate:,.0f}"
            )
            next_log += PROGRESS_EVERY


@dataclass(frozen=True)
class StoreSnapshot:
    """What the audit compares from PostgreSQL, read in one snapshot."""

    end_offsets: dict[str, int] | None
    watermark_ms: int | None
    rows: dict[Key, dict[str, Any]]
    late: dict[Key, int]
    versions: dict[Key, tuple[int, int]]


def _stored(settings: Settings, start_ms: int, end_ms: int) -> StoreSnapshot:
    """The store's end offsets, watermark, its windows of the range, their late counts and
    versions: one snapshot."""
    from cinestream.store import reads, schema
    from cinestream.store.connection import connect

    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        state, windows, versions = reads.audit_snapshot(conn, start_ms, end_ms)
    rows = {
        (w.window_type, w.window_start_ms): {name: getattr(w, name) for name in FIELDS}
        for w in windows
    }
    return StoreSnapshot(state.end_offsets, state.watermark_ms, rows, state.late_counts, versions)


class _MetricsTopic:
    """The last record per key of the metrics topic for windows of the range, read up to its
    end offsets, then on from there (:meth:`tail`)."""

    def __init__(self, settings: Settings, names: set[str], start_ms: int, end_ms: int) -> None:
        self.settings, self.names, self.start_ms, self.end_ms = settings, names, start_ms, end_ms
        self.read_to: dict[int, int] = {}

    def tail(self) -> dict[Key, dict[str, Any]]:
        from cinestream.kafka.admin import partition_offsets
        from cinestream.kafka.read import read_offsets
        from cinestream.schemas import parse_time

        topic = self.settings.metrics_topic
        parts = partition_offsets(self.settings, topic)
        starts = {p.partition: max(self.read_to.get(p.partition, p.low), p.low) for p in parts}
        ends = {p.partition: p.high for p in parts}
        latest: dict[Key, dict[str, Any]] = {}
        for msg in read_offsets(self.settings, topic, starts, ends, timeout_s=120):
            if msg.value() is None:
                continue
            record = json.loads(msg.value())
            ws = int(parse_time(record["window_start"]).timestamp() * 1000)
            if record.get("window_type") in self.names and self.start_ms <= ws < self.end_ms:
                latest[(record["window_type"], ws)] = record
        self.read_to.update(ends)
        return latest


@dataclass
class _LiveView:
    """:class:`PublicationView` on the real store and topic."""

    settings: Settings
    start_ms: int
    end_ms: int
    topic: _MetricsTopic

    def store_now(self) -> tuple[Mapping[Key, Mapping[str, Any]], Versions]:
        snap = _stored(self.settings, self.start_ms, self.end_ms)
        return snap.rows, snap.versions

    def topic_tail(self) -> Mapping[Key, Mapping[str, Any]]:
        return self.topic.tail()


def run_audit(settings: Settings, start_ms: int, end_ms: int) -> AuditReport:
    """Recompute every window of ``[start_ms, end_ms)`` and compare (see :mod:`cinestream.audit`).

    Kept whole: it reads as the audit's steps in their order (the store's snapshot, the records
    up to its offsets, the metrics topic, the comparison, the windows whose publication lagged).
    """
    from cinestream.kafka.admin import partition_offsets

    report = AuditReport(start_ms, end_ms)
    specs = settings.windows
    snap = _stored(settings, start_ms, end_ms)
    stored, late = snap.rows, snap.late
    report.closed_until_ms = (
        snap.watermark_ms
        if snap.watermark_ms is not None
        else int(time.time() * 1000) - settings.allowed_lateness_s * 1000
    )
    parts = partition_offsets(settings, settings.ratings_topic)
    if not parts:
        report.notes.append(f"topic {settings.ratings_topic} does not exist: nothing to read")
    store_end = snap.end_offsets
    if store_end is None:
        report.notes.append("the store has committed nothing yet: no record has been counted")
        store_end = {}
    ranges = _ranges(parts, store_end, report)
    log.info(
        "audit: recomputing %s from %s (%s), up to the store's end offsets",
        ", ".join(s.name for s in specs),
        settings.ratings_topic,
        ", ".join(f"p{p} [{lo}, {hi})" for p, (lo, hi) in sorted(ranges.items())) or "empty",
    )
    windows: dict[Key, Recomputed] = {}
    _read_ratings(
        settings,
        ranges,
        lambda batch: _accumulate(batch, specs, start_ms, end_ms, windows, report),
    )
    report.read = {p: r for p, r in ranges.items() if r[1] > r[0]}
    topic = _MetricsTopic(settings, {s.name for s in specs}, start_ms, end_ms)
    published: dict[Key, Mapping[str, Any]] = dict(topic.tail())
    _rows, after_read = _LiveView(settings, start_ms, end_ms, topic).store_now()
    sizes = {s.name: s.size_ms for s in specs}
    keys = sorted(k for k in set(windows) | set(stored) | set(published) if k[0] in sizes)

    def compare(key: Key, record: Mapping[str, Any] | None) -> list[Finding]:
        return compare_window(
            key,
            sizes[key[0]],
            windows.get(key),
            stored.get(key),
            record,
            late.get(key, 0),
            bool(report.deleted),
        )

    unsettled: set[Key] = set()
    for key in keys:
        found = compare(key, published.get(key))
        if any(f.where == "metrics topic" for f in found) and not publication_exact(
            key, snap.versions, after_read
        ):
            unsettled.add(key)
            found = [f for f in found if f.where != "metrics topic"]
        report.findings += found
    moved = 0
    if unsettled:
        log.info(
            "audit: %d windows were not yet published at the snapshot or changed while the "
            "topic was read: waiting up to %.0f s for the publisher",
            len(unsettled),
            PENDING_WAIT_S,
        )
        settled, moved = settle_publication(
            unsettled,
            snap.versions,
            published,
            lambda key, record: [f for f in compare(key, record) if f.where == "metrics topic"],
            _LiveView(settings, start_ms, end_ms, topic),
        )
        report.findings += settled
        report.findings.sort(key=lambda f: (f.window_type, f.window_start_ms, f.where))
    report.findings = [
        _with_open(f, sizes[f.window_type], report.closed_until_ms) for f in report.findings
    ]
    report.windows = len(keys)
    primary = specs[0].name
    report.ratings = sum(sum(w.half_stars.values()) for k, w in windows.items() if k[0] == primary)
    _add_notes(report, moved)
    return report


def _ranges(
    parts: Any, store_end: Mapping[str, int], report: AuditReport
) -> dict[int, tuple[int, int]]:
    """``[low, end)`` per partition: from the first retained record up to where the store's
    counts end (records deleted by retention and records not yet committed noted in
    ``report``)."""
    ranges = {}
    for p in parts:
        end = min(store_end.get(str(p.partition), 0), p.high)
        ranges[p.partition] = (p.low, max(end, p.low))
        report.unprocessed += p.high - max(end, p.low)
        if p.low > 0:
            report.deleted[p.partition] = p.low
    return ranges


def _add_notes(report: AuditReport, moved: int) -> None:
    """What the audit could not confirm, said in its notes."""
    if moved:
        report.notes.append(
            f"{moved} windows changed after the audit's snapshot (the stream is filling them): "
            "their metrics records equal PostgreSQL's newer rows, which this audit did not "
            "recompute"
        )
    if report.deleted:
        gone = ", ".join(f"p{p} 0..{lo - 1}" for p, lo in sorted(report.deleted.items()))
        report.notes.append(
            f"records deleted by retention ({gone}): a window that holds more ratings than the "
            "topic still has cannot be confirmed (UNVERIFIABLE, not a failure)"
        )
    if report.unprocessed:
        report.notes.append(
            f"{report.unprocessed:,} records after the store's end offsets were not audited "
            "(the processor has not committed them yet)"
        )


def _with_open(finding: Finding, size_ms: int, closed_until_ms: int) -> Finding:
    from dataclasses import replace

    return replace(finding, open=finding.window_start_ms + size_ms > closed_until_ms)
