"""``cinestream audit``: an independent check of the window metrics of a time range.

It reads the records of ``ratings`` with a plain Kafka consumer, validates and windows them here
(pure Python: neither Spark nor the processor's code), recomputes every window of the range from
the SPEC's definitions, and compares each with its row in PostgreSQL and its last record in
``metrics``. Only the records the store says it has consumed (its end offsets per partition) are
read, so a window the stream is still filling compares exactly too.

What it cannot confirm it says: records deleted by retention, records the processor has not
committed yet, and ratings the stream set aside as late (counted, not added: a backfill restores
them).

The metrics topic is compared exactly too, although the stream publishes a window only after
PostgreSQL has committed it. The store versions every window (``window_state.version``, and
``published_version``: the last version written to the topic), and the publisher delivers a
version before it marks it published. So the audit reads the topic between two store snapshots:
a window that was published at the first (version == published) and whose version did not move
by the second has exactly that version's value as its last record, and any other value is a
``DIFF``. Any other window (committed but not yet published, or changed while the topic was
read) is settled, not guessed: the audit waits up to :data:`PENDING_WAIT_S` for the publisher,
reads the topic's new records, and compares once a window's version holds still across the read
(with its recomputation if it is still the snapshot's version; with PostgreSQL's newer row if
the stream changed it since, which is then counted in a ``NOTE``). A window the publisher has
still not caught up with is one ``PENDING`` line: not a difference, no exit 1 (the processor
publishes after each commit; a running or the next ``cinestream process`` publishes it).

Each finding also says whether its window was still open (its end after the store's watermark,
or the wall clock minus the allowed lateness before any stream committed): the audit compares
open windows exactly (it reads what the store has consumed), but a backfill replaces only
closed ones, so ``cinestream_audit`` leaves them (:mod:`cinestream.orchestration.audit_tasks`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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
# How long the audit waits for the publisher to write windows that PostgreSQL committed but the
# metrics topic does not have yet (the stream publishes right after each commit: normally well
# under a second), polling the store every PENDING_POLL_S.
PENDING_WAIT_S = 15.0
PENDING_POLL_S = 0.5

Key = tuple[str, int]  # (window_type, window_start_ms)
Versions = Mapping[Key, tuple[int, int]]  # (version, published_version) per window


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
    pending: bool = False  # not a difference: committed, not yet published (implies unconfirmed)
    open: bool = False  # the window's end is after the watermark: the stream may still add to it
    stored: int | None = None  # PostgreSQL's count, its late ratings included; None: no row
    recomputed: int | None = None  # the ratings the topic holds for it; None: not compared so

    @property
    def tag(self) -> str:
        return "PENDING" if self.pending else "DIFF" if self.confirmed else "UNVERIFIABLE"

    def line(self) -> str:
        from cinestream.schemas import format_time

        made = f" (its ratings: {self.offsets})" if self.offsets else ""
        return (
            f"{self.tag} {self.window_type} {format_time(self.window_start_ms)} {self.where}: "
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

    raw = want["count"] if want else 0
    held = None if stored is None else int(stored["count"]) + late

    def found(where: str, problem: str, confirmed: bool = True) -> None:
        findings.append(
            Finding(
                window_type, start, where, problem, offsets, confirmed, stored=held, recomputed=raw
            )
        )

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


# --- the metrics topic, settled -----------------------------------------------------------------
class PublicationView(Protocol):
    """The store and the metrics topic as the audit looks at them again while it settles
    windows pending publication (a live one in :func:`run_audit`, a scripted one in tests)."""

    def store_now(self) -> tuple[Mapping[Key, Mapping[str, Any]], Versions]:
        """The windows of the range and their versions, in one snapshot."""
        ...

    def topic_tail(self) -> Mapping[Key, Mapping[str, Any]]:
        """The last record per key among the metrics records written since the previous read."""
        ...


def publication_exact(key: Key, at_snapshot: Versions, after_read: Versions) -> bool:
    """Whether the topic read between two store snapshots holds exactly the first snapshot's
    version of a window as its last record: it was published by then (version <= published;
    the publisher delivers before it marks) and no newer version was committed by the second."""
    version, published = at_snapshot.get(key, (0, 0))
    return published >= version and after_read.get(key, (0, 0))[0] == version


def settle_publication(
    keys: set[Key],
    snapshot: Versions,
    published: dict[Key, Mapping[str, Any]],
    compare: Callable[[Key, Mapping[str, Any] | None], list[Finding]],
    view: PublicationView,
    wait_s: float = PENDING_WAIT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Finding], int]:
    """The metrics-topic findings of ``keys`` (windows whose topic record could not be compared
    exactly: see the module's doc), and how many changed after the snapshot with a topic record
    equal to PostgreSQL's newer row. ``compare(key, record)``: the findings of a window as at the
    snapshot against a topic record; ``published`` is updated with the records read."""
    deadline = clock() + wait_s
    waiting = set(keys)
    findings: list[Finding] = []
    moved = 0
    rows, now = view.store_now()
    while waiting:
        lagging = {k for k in waiting if now.get(k, (0, 0))[1] < now.get(k, (0, 0))[0]}
        if lagging and clock() < deadline:
            sleep(PENDING_POLL_S)
            rows, now = view.store_now()
            continue
        published.update(view.topic_tail())
        rows_after, after = view.store_now()
        for key in sorted(waiting - lagging):
            version = now.get(key, (0, 0))[0]
            if after.get(key, (0, 0))[0] != version:
                continue  # changed again while the topic was read: look once more
            waiting.discard(key)
            if version == snapshot.get(key, (0, 0))[0]:
                findings += compare(key, published.get(key))
                continue
            newer = _against_newer_row(key, rows.get(key), published.get(key))
            findings += newer
            moved += not newer
        rows, now = rows_after, after
        if not waiting or clock() >= deadline:
            break
        sleep(PENDING_POLL_S)  # some changed again during the read: look again in a moment
    for key in sorted(waiting):
        version, done = now.get(key, (0, 0))
        why = (
            f"PostgreSQL committed version {version}, the topic has up to version {done}"
            if done < version
            else "it kept changing while the topic was read (the stream is filling it)"
        )
        findings.append(
            Finding(
                key[0],
                key[1],
                "metrics topic",
                f"not published yet after {wait_s:.0f} s: {why}; the processor publishes after "
                "each commit (a running or the next `cinestream process` publishes it)",
                "",
                confirmed=False,
                pending=True,
            )
        )
    return findings, moved


def _against_newer_row(
    key: Key, row: Mapping[str, Any] | None, record: Mapping[str, Any] | None
) -> list[Finding]:
    """A window the stream changed after the snapshot: its topic record against PostgreSQL's
    newer row (which this audit did not recompute)."""
    since = " (the window changed after the audit's snapshot: compared with PostgreSQL's newer row)"
    if record is None:
        problem = "missing" if row is not None else ""
    elif row is None:
        problem = f"has the window ({record.get('count')} ratings), PostgreSQL not"
    else:
        problem = "; ".join(field_differences(record, row))
    return [Finding(key[0], key[1], "metrics topic", problem + since, "")] if problem else []


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
    """Recompute every window of ``[start_ms, end_ms)`` and compare (see the module's doc)."""
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
    return report


def _with_open(finding: Finding, size_ms: int, closed_until_ms: int) -> Finding:
    from dataclasses import replace

    return replace(finding, open=finding.window_start_ms + size_ms > closed_until_ms)
