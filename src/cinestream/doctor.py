"""`cinestream doctor`: what is in the topics, the checkpoint and the store, and how to fix it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from cinestream.doctor_access import permission_checks, principal_checks
from cinestream.doctor_check import Check
from cinestream.errors import CheckpointMismatch, CinestreamError, ServiceUnavailable
from cinestream.kafka import admin
from cinestream.kafka.read import edge_event_times
from cinestream.local.processes import ManagedProcess
from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store import reads, reports, schema
from cinestream.store.checkpoint_lock import CheckpointLock, StoredCheckpoint, stored_checkpoint
from cinestream.store.connection import connect
from cinestream.stream.checkpoint import CheckpointFS, checkpoint_fs, is_local
from cinestream.stream.start_plan import LATEST_FIX, plan_start


def _event_time_range(times: list[int]) -> str:
    """The event times of the partitions' first and last records, as a range."""
    if not times:
        return "event times unknown"
    return f"event times {format_time(min(times))} .. {format_time(max(times))}"


def _clock_check(times: list[int], now_ms: int, tolerance_s: int) -> Check | None:
    """A WARN when the newest ratings are stamped ahead of this machine's clock."""
    ahead_s = (max(times) - now_ms) / 1000 if times else 0
    if ahead_s <= 1:
        return None
    beyond = (
        f"beyond the {tolerance_s}s future tolerance: counted as future, anchoring nothing"
        if ahead_s > tolerance_s
        else f"within the {tolerance_s}s future tolerance: counted, the watermark stays at the "
        "wall clock"
    )
    return Check(
        "WARN",
        "clock",
        f"the newest ratings are stamped {ahead_s:.0f}s ahead of this clock ({beyond})",
        "synchronise the producers' clocks (NTP); the windows are safe meanwhile",
    )


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order: the state dir's permissions, Kafka, topics, ratings, PostgreSQL,
    checkpoint, processor, metrics, late ratings, DLQ."""
    s = settings
    checks: list[Check] = permission_checks(s)
    now_ms = int(time.time() * 1000)
    try:
        topics = admin.list_topics(s)
    except ServiceUnavailable as exc:
        return [*checks, Check("FAIL", "kafka", str(exc), exc.fix or "cinestream up")]
    checks.append(Check("OK", "kafka", f"{s.kafka_description} reachable"))
    checks += principal_checks(s)
    seen = _topic_checks(s, topics, now_ms, checks)
    try:
        conn = connect(s.resolved_database_url)
    except ServiceUnavailable as exc:
        checks.append(Check("FAIL", "postgres", str(exc), "cinestream up"))
        return checks
    with conn:
        schema.ensure_schema(conn)
        checks.append(Check("OK", "postgres", s.redacted_database_url()))
        processor = reads.processor_totals(conn, s.checkpoint_dir)
        holder = CheckpointLock(s.resolved_database_url, s.checkpoint_dir).holder()
        checks += _processor_checks(s, conn, seen.parts, holder)
        checks.append(_publication_check(s, reads.unpublished(conn), running=bool(holder)))
        totals = reads.window_totals(conn, s.window_types[0])
        newest = reads.latest_window(conn, s.window_types[0], now_ms)
        ahead = reads.future_windows(conn, s.window_types[0], now_ms)
        triage = reports.dlq_verdict(conn)
    checks += _metrics_checks(s, totals, newest, ahead, seen)
    if processor is not None:
        late = processor.late
        checks.append(
            Check(
                "OK" if not late else "WARN",
                "late",
                f"{late} ratings arrived after their window closed",
                "cinestream backfill --start T --end T (restores them)",
            )
        )
    share = seen.dlq / seen.total if seen.total else 0.0
    checks.append(
        Check(
            "OK" if share <= s.max_dlq_share else "WARN",
            "dlq",
            f"{seen.dlq} invalid records in {s.dlq_topic} ({share:.2%} of ratings)",
            "read the reasons in the DLQ records and fix the producer",
        )
    )
    checks.append(_triage_check(triage))
    return checks


@dataclass(frozen=True)
class _Topics:
    """What the topic checks saw: the ratings partitions and the records of each topic."""

    parts: list[Any]
    total: int
    dlq: int
    metrics: int


def _topic_checks(s: Settings, topics: Any, now_ms: int, checks: list[Check]) -> _Topics:
    """The topics, the ratings in them and the producers' clocks (appended to ``checks``)."""
    missing = [t.name for t in admin.topic_specs(s) if t.name not in topics]
    if missing:
        checks.append(
            Check("FAIL", "topics", f"missing: {', '.join(missing)}", "cinestream topics create")
        )
    else:
        checks.append(
            Check(
                "OK",
                "topics",
                ", ".join(
                    f"{t.name}({len(topics[t.name].partitions)}p)" for t in admin.topic_specs(s)
                ),
            )
        )
    parts = admin.partition_offsets(s, s.ratings_topic)
    total = sum(p.messages for p in parts)
    if parts:
        per = ", ".join(f"p{p.partition}={p.messages} [{p.low}..{p.high})" for p in parts)
        detail = f"{total} messages ({per})"
        times = edge_event_times(s, parts) if total else []
        if total:
            detail += "; " + _event_time_range(times)
        checks.append(
            Check(
                "OK" if total else "WARN",
                "ratings",
                detail,
                "" if total else "cinestream generate --count 40400",
            )
        )
        clock = _clock_check(times, now_ms, s.future_tolerance_s)
        if clock:
            checks.append(clock)
    dlq = sum(p.messages for p in admin.partition_offsets(s, s.dlq_topic))
    metrics_msgs = sum(p.messages for p in admin.partition_offsets(s, s.metrics_topic))
    return _Topics(parts, total, dlq, metrics_msgs)


def _processor_checks(s: Settings, conn: Any, parts: list[Any], holder: str | None) -> list[Check]:
    """The checkpoint against the store and the topic, and whether a processor runs (``holder``:
    who holds the checkpoint's lock, if anyone)."""
    checkpoint = _checkpoint_checks(s, stored_checkpoint(conn, s.checkpoint_dir), parts)
    if holder and checkpoint.status == "FAIL" and checkpoint.name == "checkpoint":
        # A running processor commits every second or so: the store read above and the
        # checkpoint read after it (seconds on HDFS) can be batches apart. It compares the
        # two itself under its lock, at every commit, and refuses a mismatch there.
        recheck = _checkpoint_checks(s, stored_checkpoint(conn, s.checkpoint_dir), parts)
        if recheck.status == "FAIL":
            recheck = Check(
                "OK",
                "checkpoint",
                f"{s.checkpoint_dir} moves under the running processor ({holder}), which "
                "compares it with the store at every commit; not compared here",
            )
        checkpoint = recheck
    checks = [checkpoint]
    behind = checkpoint.status != "OK"
    if holder and checkpoint.status == "WARN":
        # A running processor catches up by itself; lag is only a warning when nobody reads.
        checkpoint.status = "OK"
    orphan = ManagedProcess("processor", s).pid()
    if holder:
        checks.append(Check("OK", "processor", f"running ({holder})"))
    elif orphan:
        checks.append(
            Check(
                "FAIL",
                "processor",
                f"pid {orphan} runs without its lock on {s.checkpoint_dir} (its database "
                "session ended); it cannot commit and stops or takes the lock again within "
                "seconds",
                "cinestream process --stop, then start it again (it resumes from the checkpoint)",
            )
        )
    else:
        checks.append(
            Check(
                "WARN" if behind else "OK",
                "processor",
                "not running" + (" and the topic has unprocessed records" if behind else ""),
                "cinestream process --trigger available-now",
            )
        )
    return checks


def _publication_check(s: Settings, pending: reads.Unpublished, running: bool) -> Check:
    """Committed but not published: normal for a moment under a running processor (it publishes
    after every commit), a stuck publication when none runs (Kafka down, or an ACL refused)."""
    if not pending.windows and not pending.dlq_records:
        return Check(
            "OK",
            "publication",
            f"every committed window is in {s.metrics_topic}; the DLQ outbox is empty",
        )
    what = (
        f"{pending.windows} committed windows not yet in {s.metrics_topic}, "
        f"{pending.dlq_records} invalid records waiting in the DLQ outbox for {s.dlq_topic}"
    )
    if running:
        return Check("OK", "publication", f"{what} (the running processor publishes them)")
    return Check(
        "WARN",
        "publication",
        f"{what}: no processor runs to publish them",
        "cinestream process --trigger available-now (it publishes them first; if it cannot, its "
        "log names the broker or the refused ACL)",
    )


def _metrics_checks(
    s: Settings, totals: Any, newest: Any, ahead: Any, seen: _Topics
) -> list[Check]:
    """The windows stored and published, and windows a producer's clock put in the future."""
    checks = []
    windows, counted = totals.windows, totals.ratings
    latest = newest.window_end_ms if newest else None
    if windows and latest is not None:
        age = time.time() - latest / 1000
        ended = f"{age:.0f}s ago" if age >= 0 else f"still open, ends in {-age:.0f}s"
        checks.append(
            Check(
                "OK",
                "metrics",
                f"{windows} {s.window_types[0]} windows in "
                f"window_metrics ({counted} ratings), {seen.metrics} records in "
                f"{s.metrics_topic}; latest window ends {format_time(latest)} "
                f"({ended})",
            )
        )
    else:
        checks.append(
            Check(
                "WARN" if seen.total else "OK",
                "metrics",
                f"no windows yet, {seen.metrics} records in {s.metrics_topic}",
                "cinestream process --trigger available-now",
            )
        )
    if ahead.windows and ahead.first_start_ms is not None and ahead.last_start_ms is not None:
        size = s.windows[0].size_ms
        checks.append(
            Check(
                "WARN",
                "future",
                f"{ahead.windows} windows ({ahead.ratings} ratings) start after this clock, "
                f"{format_time(ahead.first_start_ms)} .. "
                f"{format_time(ahead.last_start_ms + size)}: a producer's clock is ahead; they "
                "are kept and reported, never shown as the live state",
                f"find the producer writing ratings stamped from "
                f"{format_time(ahead.first_start_ms)} into {s.ratings_topic} and fix its clock",
            )
        )
    return checks


def _triage_check(verdict: dict[str, Any] | None) -> Check:
    """The newest ``cinestream_dlq`` report: whether it marked the platform degraded, or that
    it is too old to say (cinestream_dlq has stopped reporting)."""
    from cinestream.orchestration.dlq_triage import VERDICT_MAX_AGE_S, age_text, verdict_state

    if verdict is None:
        return Check("OK", "dlq-report", "no cinestream_dlq report yet")
    share, threshold, report_id = verdict["share"], verdict["threshold"], verdict["id"]
    state = verdict_state(verdict["degraded"], verdict["run_at"], verdict["now"])
    if state == "stale":
        age = (verdict["now"] - verdict["run_at"]).total_seconds()
        return Check(
            "WARN",
            "dlq-report",
            f"stale: the newest cinestream_dlq report ({report_id}) is {age_text(age)} old "
            f"(more than {VERDICT_MAX_AGE_S // 3600} h; it runs hourly): its verdict "
            f"({'degraded' if verdict['degraded'] else 'ok'}) no longer holds",
            "unpause cinestream_dlq in the Airflow UI (or `make up`) and read its latest run's log",
        )
    if state == "degraded":
        return Check(
            "WARN",
            "dlq-report",
            f"degraded: invalid records are {share:.2%} of the traffic over the last hour's "
            f"DLQ reports (threshold {threshold:.2%}, CINESTREAM_DLQ_DEGRADED_SHARE); see DLQ "
            f"report {report_id} in Browse -> Data quality (cinestream) "
            f"(/cinestream-quality/dlq/{report_id})",
            "read the report's reasons and producer keys and fix those producers",
        )
    return Check(
        "OK",
        "dlq-report",
        f"latest cinestream_dlq report {report_id}: {share:.2%} invalid over the last hour "
        f"(threshold {threshold:.2%})",
    )


def _checkpoint_checks(
    s: Settings, stored: StoredCheckpoint, parts: list[admin.PartitionOffsets]
) -> Check:
    try:
        with checkpoint_fs(s.checkpoint_dir) as fs:
            return _plan_check(s, fs, stored)
    except CinestreamError as exc:
        # The checkpoint's storage (an HDFS NameNode or DataNode) does not answer: one line
        # naming the URI, and its fix.
        if is_local(s.checkpoint_dir):
            raise
        problem, _, fix = str(exc).partition("; fix: ")
        return Check("FAIL", "checkpoint", problem, fix or "cinestream status")


def _plan_check(s: Settings, fs: CheckpointFS, stored: StoredCheckpoint) -> Check:
    try:
        plan = plan_start(s, fs, stored)
    except CheckpointMismatch as exc:
        return Check("FAIL", "checkpoint", exc.problem, exc.fix)
    except CinestreamError as exc:
        if not is_local(s.checkpoint_dir) and "; fix: " in str(exc):
            raise  # the storage failed: said by _checkpoint_checks
        return Check("FAIL", "checkpoint", str(exc), "cinestream topics create")
    if plan.resumed_batch is None and plan.from_store:
        return Check(
            "OK" if plan.backlog == 0 else "WARN",
            "checkpoint",
            f"none at {s.checkpoint_dir}; the store holds {s.ratings_topic} up to "
            + ", ".join(f"p{p}={o}" for p, o in sorted(plan.start_offsets.items()))
            + f", where the next run resumes: {plan.backlog} records to process",
            "cinestream process --trigger available-now",
        )
    if plan.resumed_batch is None:
        if plan.skipped_by_latest:
            return Check(
                "FAIL",
                "checkpoint",
                plan.latest_warning(s.ratings_topic).removesuffix(f"; {LATEST_FIX}"),
                LATEST_FIX,
            )
        return Check(
            "OK" if plan.backlog == 0 else "WARN",
            "checkpoint",
            f"none yet at {s.checkpoint_dir}; a first run reads from "
            f"{s.starting_offsets}: {plan.backlog} records to process",
            "cinestream process --trigger available-now",
        )
    lag = plan.backlog
    detail = (
        f"batch {plan.resumed_batch} at "
        + ", ".join(
            f"p{p}={o}/{plan.end_offsets.get(p, '?')}"
            for p, o in sorted(plan.start_offsets.items())
        )
        + f"; lag {lag}"
    )
    if plan.unfinished_batch is not None:
        detail += (
            f"; batch {plan.unfinished_batch} is marked done but not in PostgreSQL yet (being "
            "committed now, or read again at the next start)"
        )
    return Check(
        "OK" if lag == 0 else "WARN",
        "checkpoint",
        detail,
        "cinestream process --trigger available-now",
    )


def report(settings: Settings, as_json: bool = False) -> tuple[str, bool]:
    """The checks as text (or JSON), and whether any failed."""
    checks = run_checks(settings)
    failed = any(c.status == "FAIL" for c in checks)
    if as_json:
        return json.dumps(
            {"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2
        ), failed
    return "\n".join(c.line() for c in checks), failed
