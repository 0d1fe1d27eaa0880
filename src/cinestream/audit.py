"""``cinestream audit``: an independent check of the window metrics of a time range.

It reads the records of ``ratings`` with a plain Kafka consumer, validates and windows them here
(pure Python: neither Spark nor the processor's code), recomputes every window of the range from
the SPEC's definitions, and compares each with its row in PostgreSQL and its last record in
``metrics``. Only the records the store says it has consumed (its end offsets per partition) are
read, so a window the stream is still filling compares exactly too.

What it cannot confirm it says: records deleted by retention, records the processor has not
committed yet, and ratings the stream set aside as late (counted, not added: a backfill restores
them).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cinestream.schemas import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from cinestream.settings import Settings
from cinestream.windows import WindowSpec

log = logging.getLogger(__name__)

MAX_ID = 2**63 - 1
TOP = 10
# Two means are the same when they differ by less than this (they are sums of half stars over a
# count, computed in a different order).
AVG_TOLERANCE = 1e-9
PROGRESS_EVERY = 250_000


# --- the rules, written again ------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_rating(value: bytes | None) -> tuple[int, int, int, int] | None:
    """(user_id, movie_id, half_stars 1..10, timestamp_ms) of a valid rating, else None.

    The SPEC's rules read directly: a UTF-8 JSON object (strict JSON: no NaN, no trailing
    data); integer ids >= 1; a rating of 0.5..5.0 in half stars; an integer timestamp in
    [2000-01-01, 2100-01-01). Extra fields are ignored."""
    if value is None:
        return None
    try:
        body = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    user, movie, rating, ts = (body.get(k) for k in ("user_id", "movie_id", "rating", "timestamp"))
    if type(user) is not int or type(movie) is not int:
        return None
    if not (1 <= user <= MAX_ID and 1 <= movie <= MAX_ID):
        return None
    if not isinstance(rating, (int, float)) or isinstance(rating, bool):
        return None
    if not math.isfinite(rating):
        return None
    half = rating * 2
    if half != int(half) or not 1 <= half <= 10:
        return None
    if type(ts) is not int or not MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
        return None
    return user, movie, int(half), ts


def window_starts(spec: WindowSpec, ts: int) -> list[int]:
    """Starts of every window of ``spec`` that contains ``ts`` (windows aligned to the epoch)."""
    last = ts - ts % spec.slide_ms
    return [s for s in range(last, ts - spec.size_ms, -spec.slide_ms) if s <= ts < s + spec.size_ms]


@dataclass
class Recomputed:
    """One window, recomputed: ratings per half star and per movie, and where they came from."""

    half_stars: Counter[int] = field(default_factory=Counter)
    movies: Counter[int] = field(default_factory=Counter)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int, movie: int, half: int) -> None:
        self.half_stars[half] += 1
        self.movies[movie] += 1
        low, high = self.offsets.get(partition, (offset, offset))
        self.offsets[partition] = (min(low, offset), max(high, offset))

    def metric(self) -> dict[str, Any]:
        """count, avg_rating, p50_rating, p95_rating, top_movies, as the SPEC defines them."""
        count = sum(self.half_stars.values())
        total = sum(h * n for h, n in self.half_stars.items())

        def percentile(p: float) -> float:
            rank, below = math.ceil(p * count), 0
            for half in sorted(self.half_stars):
                below += self.half_stars[half]
                if below >= rank:
                    return half / 2
            raise AssertionError("unreachable: the ranks add up to count")

        top = sorted(self.movies.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
        return {
            "count": count,
            "avg_rating": total / 2 / count,
            "p50_rating": percentile(0.50),
            "p95_rating": percentile(0.95),
            "top_movies": json.dumps([m for m, _ in top], separators=(",", ":")),
        }

    def where(self) -> str:
        """``p0 12..340, p2 5..77``: the partitions and offsets of the window's ratings."""
        return ", ".join(f"p{p} {lo}..{hi}" for p, (lo, hi) in sorted(self.offsets.items()))


# --- comparing ----------------------------------------------------------------------------------
FIELDS = ("count", "avg_rating", "p50_rating", "p95_rating", "top_movies")


def field_differences(got: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """``count 1020 != 1024``-style texts, one per field of ``got`` that is not ``want``'s."""
    out = []
    for name in FIELDS:
        a, b = got.get(name), want.get(name)
        if name == "avg_rating" and a is not None and b is not None:
            if abs(float(a) - float(b)) <= AVG_TOLERANCE:
                continue
        elif a == b:
            continue
        out.append(f"{name} {a} != {b}")
    return out


@dataclass(frozen=True)
class Finding:
    """One window that does not equal its recomputation (or cannot be confirmed)."""

    window_type: str
    window_start_ms: int
    where: str  # "postgres" or "metrics topic"
    problem: str
    offsets: str
    confirmed: bool = True  # False: cannot be told apart from records deleted by retention

    def line(self) -> str:
        from cinestream.schemas import format_time

        tag = "DIFF" if self.confirmed else "UNVERIFIABLE"
        made = f" (its ratings: {self.offsets})" if self.offsets else ""
        return (
            f"{tag} {self.window_type} {format_time(self.window_start_ms)} {self.where}: "
            f"{self.problem}{made}"
        )


def compare_window(
    key: tuple[str, int],
    size_ms: int,
    recomputed: Recomputed | None,
    stored: Mapping[str, Any] | None,
    published: Mapping[str, Any] | None,
    late: int,
    records_deleted: bool,
) -> list[Finding]:
    """The findings for one window: its PostgreSQL row and its last ``metrics`` record against
    the recomputation. ``late``: ratings the stream set aside for it (window_state)."""
    from cinestream.schemas import format_time

    window_type, start = key
    want = recomputed.metric() if recomputed else None
    offsets = recomputed.where() if recomputed else ""
    findings: list[Finding] = []

    def found(where: str, problem: str, confirmed: bool = True) -> None:
        findings.append(Finding(window_type, start, where, problem, offsets, confirmed))

    raw = want["count"] if want else 0
    if stored is None and want is not None:
        found("postgres", f"missing (the topic holds {raw} ratings for it)")
    elif stored is not None and want is None:
        found(
            "postgres",
            f"has {stored['count']} ratings, the topic none",
            confirmed=not records_deleted,
        )
    elif stored is not None and want is not None:
        diffs = field_differences(stored, want)
        if diffs and late and stored["count"] + late == raw:
            backfill = (
                f"cinestream backfill --start {format_time(start)} "
                f"--end {format_time(start + size_ms)} --lookback all"
            )
            found("postgres", f"{late} late ratings not in its metrics; `{backfill}` restores them")
        elif diffs:
            found(
                "postgres",
                "; ".join(diffs) + (f" (the stream set {late} aside as late)" if late else ""),
                confirmed=not (records_deleted and stored["count"] > raw),
            )
    # The topic's last record against the recomputation (against PostgreSQL where the topic no
    # longer holds the ratings): a row altered in PostgreSQL alone is one finding, not two.
    truth, against = (want, "") if want is not None else (stored, " (compared with PostgreSQL)")
    same_as_postgres = (
        stored is not None and published is not None and not field_differences(published, stored)
    )
    if findings and same_as_postgres:
        pass  # the topic says what PostgreSQL says: the finding above covers both
    elif truth is not None and published is None:
        found("metrics topic", "missing" + (" (PostgreSQL has the window)" if stored else ""))
    elif truth is not None and published is not None:
        diffs = field_differences(published, truth)
        if diffs:
            more = int(published.get("count") or 0) > int(truth.get("count") or 0)
            found("metrics topic", "; ".join(diffs) + against, not (records_deleted and more))
    elif published is not None:
        found("metrics topic", f"has the window ({published.get('count')} ratings), PostgreSQL not")
    return findings


# --- reading ------------------------------------------------------------------------------------
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
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differences(self) -> list[Finding]:
        return [f for f in self.findings if f.confirmed]

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
        else:
            out.append(f"OK {summary}: every window equals its recomputation")
        return out


def _accumulate(
    messages: Iterable[Any],
    specs: list[WindowSpec],
    start_ms: int,
    end_ms: int,
    windows: dict[tuple[str, int], Recomputed],
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


def _stored(
    settings: Settings, start_ms: int, end_ms: int
) -> tuple[
    dict[str, int] | None, dict[tuple[str, int], dict[str, Any]], dict[tuple[str, int], int]
]:
    """The store's end offsets, its windows of the range and their late counts: one snapshot."""
    from cinestream.store import reads, schema
    from cinestream.store.connection import connect

    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        state, windows = reads.audit_snapshot(conn, start_ms, end_ms)
    stored = {
        (w.window_type, w.window_start_ms): {name: getattr(w, name) for name in FIELDS}
        for w in windows
    }
    return state.end_offsets, stored, state.late_counts


def _published(
    settings: Settings, names: set[str], start_ms: int, end_ms: int
) -> dict[tuple[str, int], dict[str, Any]]:
    """The last record per key of the metrics topic, for windows of the range."""
    from cinestream.kafka.read import read_all
    from cinestream.schemas import parse_time

    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for msg in read_all(settings, settings.metrics_topic, timeout_s=120):
        if msg.value() is None:
            continue
        record = json.loads(msg.value())
        ws = int(parse_time(record["window_start"]).timestamp() * 1000)
        if record.get("window_type") in names and start_ms <= ws < end_ms:
            latest[(record["window_type"], ws)] = record
    return latest


def run_audit(settings: Settings, start_ms: int, end_ms: int) -> AuditReport:
    """Recompute every window of ``[start_ms, end_ms)`` and compare (see the module's doc)."""
    from cinestream.kafka.admin import partition_offsets

    report = AuditReport(start_ms, end_ms)
    specs = settings.windows
    store_end, stored, late = _stored(settings, start_ms, end_ms)
    parts = partition_offsets(settings, settings.ratings_topic)
    if not parts:
        report.notes.append(f"topic {settings.ratings_topic} does not exist: nothing to read")
    if store_end is None:
        report.notes.append("the store has committed nothing yet: no record has been counted")
        store_end = {}
    ranges = {}
    for p in parts:
        end = min(store_end.get(str(p.partition), 0), p.high)
        ranges[p.partition] = (p.low, max(end, p.low))
        report.unprocessed += p.high - max(end, p.low)
        if p.low > 0:
            report.deleted[p.partition] = p.low
    log.info(
        "audit: recomputing %s from %s (%s), up to the store's end offsets",
        ", ".join(s.name for s in specs),
        settings.ratings_topic,
        ", ".join(f"p{p} [{lo}, {hi})" for p, (lo, hi) in sorted(ranges.items())) or "empty",
    )
    windows: dict[tuple[str, int], Recomputed] = {}
    _read_ratings(
        settings,
        ranges,
        lambda batch: _accumulate(batch, specs, start_ms, end_ms, windows, report),
    )
    report.read = {p: r for p, r in ranges.items() if r[1] > r[0]}
    published = _published(settings, {s.name for s in specs}, start_ms, end_ms)
    sizes = {s.name: s.size_ms for s in specs}
    keys = sorted(set(windows) | set(stored) | set(published))
    for key in keys:
        if key[0] not in sizes:
            continue
        report.findings += compare_window(
            key,
            sizes[key[0]],
            windows.get(key),
            stored.get(key),
            published.get(key),
            late.get(key, 0),
            bool(report.deleted),
        )
    report.windows = len([k for k in keys if k[0] in sizes])
    primary = specs[0].name
    report.ratings = sum(sum(w.half_stars.values()) for k, w in windows.items() if k[0] == primary)
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
    return report
