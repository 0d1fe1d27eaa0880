"""Comparing a recomputed window with PostgreSQL's row and the last record in ``metrics``, and
settling the windows whose publication lagged the snapshot (see :mod:`cinestream.audit`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cinestream.audit.rules import Recomputed

# Two means are the same when they differ by less than this (they are sums of half stars over a
# count, computed in a different order).
AVG_TOLERANCE = 1e-9
# How long the audit waits for the publisher to write windows that PostgreSQL committed but the
# metrics topic does not have yet (the stream publishes right after each commit: normally well
# under a second), polling the store every PENDING_POLL_S.
PENDING_WAIT_S = 15.0
PENDING_POLL_S = 0.5

Key = tuple[str, int]  # (window_type, window_start_ms)
Versions = Mapping[Key, tuple[int, int]]  # (version, published_version) per window

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
