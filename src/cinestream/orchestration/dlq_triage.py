"""DLQ triage (DAG ``cinestream_dlq``): what arrived in ``ratings_dlq`` since the last report,
grouped by reason and producer key, and whether the platform is degraded.

Airflow starts it: an asset watcher on the DLQ topic runs the Kafka provider's
``KafkaMessageQueueTrigger`` in the triggerer, whose consumer calls :func:`dlq_arrived` on each
DLQ record (no polling loop of ours). A run reads the DLQ from where the previous report ended up
to the end offsets it finds, so no record is reported twice or skipped, however many trigger
events a burst made.

The verdict: the platform is *degraded* when invalid records exceed
``CINESTREAM_DLQ_DEGRADED_SHARE`` of the traffic (valid + invalid records the store counted) over
the reports of the last :data:`VERDICT_PERIOD_S` (this one included), so a report of a few
seconds cannot clear a burst's verdict on its own, and an hour without invalid records does.

A verdict expires: cinestream_dlq reports at least hourly, so a newest report older than
:data:`VERDICT_MAX_AGE_S` means it has stopped (paused, failing, Airflow down). Its verdict no
longer says how the data is, and readers (``/metrics/health``, the dashboard, ``doctor``, the
quality view) show it as ``stale`` (:func:`verdict_state`), never as degraded (or ok) forever.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("cinestream.orchestration")

# The Airflow connection of the watcher's consumer (its own consumer group, manual commits).
DLQ_WATCH_CONN_ID = "cinestream_dlq_watch"
DLQ_WATCH_GROUP = "cinestream-dlq-watch"
# One trigger event per burst: records the watcher consumes within this many seconds of its last
# event make none (a run covers them: it reads only once this long after the event).
DEBOUNCE_S = 5.0
# The verdict looks at the reports of this period.
VERDICT_PERIOD_S = 3600
# A newest report older than this is stale: two missed hourly runs (a module constant, not a
# setting: it follows from the DAG's hourly schedule, which is not configurable either).
VERDICT_MAX_AGE_S = 2 * 3600
# How many groups a report keeps (the most frequent; the rest are summed as "others").
TOP_GROUPS = 20
_NO_KEY = "(no key)"

_last_event = {"at": -math.inf}


def dlq_arrived(message: Any) -> dict[str, Any] | None:
    """The watcher's ``apply_function``: a trigger event for the first DLQ record of a burst.

    The provider's trigger fires once per returned value, then the triggerer starts it again (a
    new consumer joining its group): without this a burst of 10,000 records would make 10,000
    trigger events. Runs in the triggerer, whose process keeps the time of the last event.
    """
    now = time.time()
    if now - _last_event["at"] < DEBOUNCE_S:
        return None
    _last_event["at"] = now
    return {
        "fired_at": now,
        "partition": message.partition(),
        "offset": message.offset(),
        "reason": reason_kind(_error_of(message.value())),
    }


# --- pure rules ---------------------------------------------------------------------------------
def reason_kind(error: str | None) -> str:
    """A DLQ record's reason without the value it quotes: ``rating must be one of 0.5, 1.0,
    ..., 5.0, got 7.0`` -> ``rating must be one of 0.5, 1.0, ..., 5.0``."""
    if not error:
        return "(no reason: not a cinestream DLQ record)"
    return error.split(", got ", 1)[0]


def _error_of(value: bytes | None) -> str | None:
    try:
        record = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    error = record.get("error") if isinstance(record, dict) else None
    return str(error) if error is not None else None


def _key_text(key: bytes | None) -> str:
    if key is None:
        return _NO_KEY
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()


def top_groups(counts: Counter[Any], top: int = TOP_GROUPS) -> list[tuple[Any, int]]:
    """The ``top`` most frequent entries (ties by name), then ``("others", n)`` for the rest."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    head, rest = ranked[:top], ranked[top:]
    if rest:
        head.append(("others", sum(n for _, n in rest)))
    return head


def group_records(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
    """DLQ records ``(key, value)`` grouped by reason, by producer key, and by both."""
    reasons: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    examples: dict[str, str] = {}
    for key, value in records:
        error = _error_of(value)
        kind = reason_kind(error)
        who = _key_text(key)
        reasons[kind] += 1
        keys[who] += 1
        pairs[(kind, who)] += 1
        examples.setdefault(kind, (error or "")[:200])
    return {
        "reasons": [
            {"reason": r, "count": n, "example": examples.get(r, "")}
            for r, n in top_groups(reasons)
        ],
        "keys": [
            {"key": k, "count": n, "reasons": _reasons_of(pairs, k)} for k, n in top_groups(keys)
        ],
    }


def _reasons_of(pairs: Counter[tuple[str, str]], key: str) -> dict[str, int]:
    return {r: n for (r, k), n in sorted(pairs.items()) if k == key}


def invalid_share(invalid: int, valid: int) -> float:
    """Invalid records as a share of the traffic (valid + invalid); 0 without traffic."""
    total = invalid + valid
    return invalid / total if total else 0.0


def is_degraded(share: float, threshold: float) -> bool:
    """Degraded when the invalid share exceeds the threshold (equal is still fine)."""
    return share > threshold


def counted_since(now: Mapping[str, int], before: Mapping[str, int] | None) -> dict[str, int]:
    """What the store counted between two snapshots of its totals; a total that went back (the
    store was reset) counts from zero."""
    out = {}
    for name, value in now.items():
        prev = (before or {}).get(name, 0)
        out[name] = value - prev if value >= prev else value
    return out


def window_starts(
    low_high: Mapping[int, tuple[int, int]], previous_end: Mapping[str, int] | None
) -> dict[int, int]:
    """Where a report reads each partition: where the previous one ended, or the partition's
    first record (a new partition, a recreated topic, records deleted by retention)."""
    starts = {}
    for partition, (low, high) in low_high.items():
        prev = (previous_end or {}).get(str(partition))
        starts[partition] = prev if prev is not None and low <= prev <= high else low
    return starts


@dataclass(frozen=True)
class Verdict:
    """The share over the verdict period and whether it marks the platform degraded."""

    invalid: int
    valid: int
    share: float
    degraded: bool


def verdict(recent: Sequence[tuple[int, int]], threshold: float) -> Verdict:
    """The verdict over ``recent`` reports' ``(invalid, valid)``, this one included."""
    invalid = sum(i for i, _ in recent)
    valid = sum(v for _, v in recent)
    share = invalid_share(invalid, valid)
    return Verdict(invalid, valid, share, is_degraded(share, threshold))


def verdict_state(
    degraded: bool, made_at: datetime, now: datetime, max_age_s: float = VERDICT_MAX_AGE_S
) -> str:
    """``degraded`` or ``ok`` as the newest report said, or ``stale`` once it is older than
    ``max_age_s`` (a report stamped after ``now``, a clock step, counts as fresh)."""
    if (now - made_at).total_seconds() > max_age_s:
        return "stale"
    return "degraded" if degraded else "ok"


def age_text(seconds: float) -> str:
    """``3 h 05 min``, ``12 min``: how old a report is, for one-line messages."""
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


# --- the task -----------------------------------------------------------------------------------
def fired_at(triggering_asset_events: Mapping[Any, Sequence[Any]] | None) -> float | None:
    """The newest watcher event time among the events that started the run (None: a run by the
    clock or by hand)."""
    times = [
        float(payload["fired_at"])
        for events in (triggering_asset_events or {}).values()
        for event in events
        if isinstance(payload := (event.extra or {}).get("payload"), dict) and "fired_at" in payload
    ]
    return max(times) if times else None


def triage(source: str, triggering_asset_events: Mapping[Any, Sequence[Any]] | None) -> dict:
    """Report the DLQ records since the last report; log the verdict; return the report."""
    from cinestream.kafka.admin import partition_offsets, topic_id
    from cinestream.kafka.read import read_offsets
    from cinestream.orchestration.task_bodies import task_settings
    from cinestream.store import reads, reports, schema
    from cinestream.store.connection import connect

    settings = task_settings(kafka_role="auditor")
    fired = fired_at(triggering_asset_events)
    if fired is not None:
        # The watcher made no event for records it consumed within DEBOUNCE_S of this one: read
        # after that, so this report has them.
        wait = fired + DEBOUNCE_S + 1 - time.time()
        if wait > 0:
            log.info("waiting %.1fs for the rest of the burst the watcher saw", wait)
            time.sleep(wait)
    topic = settings.dlq_topic
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        previous = reports.last_dlq_report(conn, topic)
        totals = reads.processor_totals(conn)
    tid = topic_id(settings, topic)
    if previous is not None and previous.get("topic_id") != tid:
        log.info("topic %s was recreated since the last report: reading it from its start", topic)
        previous = None
    parts = {p.partition: (p.low, p.high) for p in partition_offsets(settings, topic)}
    starts = window_starts(parts, previous["end_offsets"] if previous else None)
    ends = {p: high for p, (_, high) in parts.items()}
    invalid = sum(ends[p] - starts[p] for p in ends)
    grouped = group_records(
        (m.key(), m.value()) for m in read_offsets(settings, topic, starts, ends, timeout_s=120)
    )
    counted_now = {
        "valid_total": totals.valid if totals else 0,
        "invalid_total": totals.invalid if totals else 0,
    }
    counted = counted_since(counted_now, previous["counted"] if previous else None)
    with connect(settings.resolved_database_url) as conn:
        recent = reports.recent_dlq_counts(conn, topic, VERDICT_PERIOD_S)
    judged = verdict([*recent, (invalid, counted["valid_total"])], settings.dlq_degraded_share)
    report = reports.DlqReport(
        source=source,
        dlq_topic=topic,
        topic_id=tid,
        start_offsets={str(p): o for p, o in starts.items()},
        end_offsets={str(p): o for p, o in ends.items()},
        invalid=invalid,
        valid=counted["valid_total"],
        share=judged.share,
        threshold=settings.dlq_degraded_share,
        degraded=judged.degraded,
        counted=counted_now,
        reasons=grouped["reasons"],
        keys=grouped["keys"],
    )
    with connect(settings.resolved_database_url) as conn:
        report_id = reports.record_dlq_report(conn, report)
    for line in report_lines(report):
        (log.warning if report.degraded else log.info)("%s", line)
    return {
        "id": report_id,
        "invalid": invalid,
        "valid": report.valid,
        "share": judged.share,
        "degraded": judged.degraded,
        "reasons": {g["reason"]: g["count"] for g in grouped["reasons"]},
    }


def report_lines(report: Any) -> list[str]:
    """The report as the task log shows it: the verdict, then one line per reason and key."""
    verdict_word = "DEGRADED" if report.degraded else "OK"
    lines = [
        f"{verdict_word} dlq {report.dlq_topic}: {report.invalid} invalid, {report.valid} valid "
        f"records since the last report; invalid share over the last "
        f"{VERDICT_PERIOD_S // 60} min {report.share:.2%} (threshold "
        f"{report.threshold:.2%}, CINESTREAM_DLQ_DEGRADED_SHARE)"
    ]
    lines += [f"REASON {g['count']:>7} {g['reason']}" for g in report.reasons]
    lines += [f"KEY    {g['count']:>7} {g['key']}" for g in report.keys]
    return lines
