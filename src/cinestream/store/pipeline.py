"""What the store holds: the pipeline it belongs to and, per partition, where its counts end.

One row (``pipeline``) binds a database to one ratings topic (its name and id) and one set of
window types, and records the end offset per partition of everything any stream committed, with
the store-wide watermark. Every stream commit, from whichever checkpoint, must start where that
row says the store ends, or it is refused inside its own transaction: a batch can neither be
counted twice nor skipped. A new (or moved, or deleted) checkpoint over a store that holds the
topic starts from these offsets, so moving a checkpoint never double-counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from cinestream.errors import CHECKPOINT_FIX, RECREATED_FIX, CheckpointMismatch

Offsets = dict[str, int]  # partition (as Kafka's JSON has it, a string) -> offset


@dataclass(frozen=True)
class PipelineBinding:
    """The ``pipeline`` row: which topic and window types the store holds, and how far."""

    ratings_topic: str
    topic_id: str | None
    window_types: tuple[str, ...]
    end_offsets: Offsets
    watermark_ms: int
    max_event_ms: int
    last_checkpoint: str | None


def read_binding(
    conn: psycopg.Connection[Any], *, for_update: bool = False
) -> PipelineBinding | None:
    """The store's pipeline row (None when the store has never committed a batch)."""
    row = conn.execute(
        "SELECT ratings_topic, topic_id, window_types, end_offsets, watermark_ms, max_event_ms, "
        "last_checkpoint FROM pipeline" + (" FOR UPDATE" if for_update else "")
    ).fetchone()
    if row is None:
        return None
    return PipelineBinding(
        row[0],
        row[1],
        tuple(t for t in (row[2] or "").split(",") if t),
        parse_offsets(row[3]),
        int(row[4]),
        int(row[5]),
        row[6],
    )


def stored_binding(conn: psycopg.Connection[Any]) -> PipelineBinding | None:
    """The store's pipeline row, or None when no stream has committed into this store."""
    with conn.transaction():
        return read_binding(conn)


def database_label(conn: psycopg.Connection[Any]) -> str:
    """``cinestream on 127.0.0.1:5432``: which database a message speaks of."""
    return f"{conn.info.dbname} on {conn.info.host}:{conn.info.port}"


def parse_offsets(value: Any) -> Offsets:
    """Offsets as stored (jsonb, a dict or its JSON text) with string partitions."""
    if isinstance(value, str):
        value = json.loads(value)
    return {str(p): int(o) for p, o in (value or {}).items()}


def format_offsets(topic: str, offsets: Mapping[str, int]) -> str:
    """``ratings-0@120, ratings-1@98`` (partitions in order)."""
    if not offsets:
        return "nothing"
    ordered = sorted(offsets.items(), key=lambda x: int(x[0]))
    return ", ".join(f"{topic}-{p}@{o}" for p, o in ordered)


# --------------------------------------------------------------------------------------------
# The rules, as pure functions (unit-tested without a database)
# --------------------------------------------------------------------------------------------
def binding_problem(
    binding: PipelineBinding | None,
    topic: str,
    topic_id: str | None,
    window_types: tuple[str, ...],
    database: str,
) -> CheckpointMismatch | None:
    """Why this store cannot take ratings of ``topic`` (id ``topic_id``) with these window
    types, or None when it can (it is new, or it holds exactly this pipeline)."""
    if binding is None:
        return None
    if binding.ratings_topic != topic:
        return CheckpointMismatch(
            f"the database {database} holds the windows of topic {binding.ratings_topic!r}"
            f" (id {binding.topic_id}), not of {topic!r}: two topics would count into the same "
            "windows",
            f"give each ratings topic a database of its own (CINESTREAM_DATABASE_URL), or set "
            f"CINESTREAM_RATINGS_TOPIC={binding.ratings_topic}",
        )
    if binding.window_types and binding.window_types != window_types:
        return CheckpointMismatch(
            f"the database {database} holds windows of types {','.join(binding.window_types)}"
            f", not {','.join(window_types)}: a new type would miss every rating counted so far",
            f"set CINESTREAM_WINDOW_TYPES={','.join(binding.window_types)}, or use a new "
            "database for the new window types (it counts the topic from its start)",
        )
    if binding.topic_id and topic_id and binding.topic_id != topic_id:
        return CheckpointMismatch(
            f"topic {topic!r} was deleted and recreated (id {binding.topic_id} -> {topic_id}): "
            f"the store counted the old topic up to {format_offsets(topic, binding.end_offsets)}",
            RECREATED_FIX,
        )
    return None


def continuity_problem(store_end: Offsets, start: Offsets | None) -> str | None:
    """Why a batch starting at ``start`` may not be committed into a store that ends at
    ``store_end``, or None: every partition the store holds must start exactly where the store
    ends (a partition new to the store may start anywhere: the first batch, or one added to the
    topic)."""
    if not store_end:
        return None
    if start is None:
        return "its start offsets are unknown"
    gaps = [
        f"partition {p} starts at {start[p]} but the store ends at {end}"
        for p, end in sorted(store_end.items(), key=lambda x: int(x[0]))
        if p in start and start[p] != end
    ]
    missing = [p for p in store_end if p not in start]
    if missing:
        gaps.append(f"partitions {', '.join(sorted(missing))} are not in the batch")
    return "; ".join(gaps) or None


def merged_end(store_end: Offsets, batch_end: Mapping[str, int]) -> Offsets:
    """The store's end offsets after a batch ending at ``batch_end``."""
    return {**store_end, **{str(p): int(o) for p, o in batch_end.items()}}


# --------------------------------------------------------------------------------------------
# Inside a commit's transaction
# --------------------------------------------------------------------------------------------
def bind_for_commit(
    conn: psycopg.Connection[Any],
    *,
    topic: str,
    topic_id: str | None,
    window_types: tuple[str, ...],
    checkpoint: str,
) -> PipelineBinding:
    """Lock the store's pipeline row for this commit (creating it on the first commit into a new
    store); raise :class:`CheckpointMismatch` when the store belongs to another pipeline."""
    conn.execute(
        "INSERT INTO pipeline (ratings_topic, topic_id, window_types, last_checkpoint) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (topic, topic_id, ",".join(window_types), checkpoint),
    )
    binding = read_binding(conn, for_update=True)
    assert binding is not None  # inserted above, or there already
    problem = binding_problem(binding, topic, topic_id, window_types, database_label(conn))
    if problem is not None:
        raise problem
    if not binding.window_types or (topic_id and not binding.topic_id):
        # A store from before the binding (migrated from processor_state): complete it.
        conn.execute(
            "UPDATE pipeline SET window_types = %s, topic_id = coalesce(topic_id, %s)",
            (",".join(window_types), topic_id),
        )
    return binding


def check_continuity(
    binding: PipelineBinding, start: Offsets | None, *, batch_id: int, checkpoint: str, topic: str
) -> None:
    """Refuse (inside the commit's transaction) a batch that does not start where the store
    ends."""
    problem = continuity_problem(binding.end_offsets, start)
    if problem is not None:
        raise CheckpointMismatch(
            f"batch {batch_id} of checkpoint {checkpoint} does not start where the store ends "
            f"({format_offsets(topic, binding.end_offsets)}, last written from checkpoint "
            f"{binding.last_checkpoint}): {problem}; committing it would skip or double-count "
            "ratings",
            CHECKPOINT_FIX,
        )


def advance(
    conn: psycopg.Connection[Any],
    binding: PipelineBinding,
    *,
    end_offsets: Mapping[str, int],
    watermark_ms: int,
    max_event_ms: int,
    checkpoint: str,
) -> None:
    """Record the store's new end offsets and watermark (in the commit's transaction)."""
    conn.execute(
        "UPDATE pipeline SET end_offsets = %s, watermark_ms = %s, max_event_ms = %s, "
        "last_checkpoint = %s, updated_at = now()",
        (
            json.dumps(merged_end(binding.end_offsets, end_offsets)),
            watermark_ms,
            max_event_ms,
            checkpoint,
        ),
    )


def rebind_to_topic(conn: psycopg.Connection[Any], topic: str, topic_id: str) -> bool:
    """After the topic was deleted and recreated: keep every window, count the new topic from
    its start into them (``cinestream reset --checkpoint-only``). True when it rebound: only
    when the store knows the old topic's id and it differs from ``topic_id`` (an id that is not
    known is never taken for a recreated topic)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE pipeline SET topic_id = %s, end_offsets = '{}'::jsonb, updated_at = now() "
            "WHERE ratings_topic = %s AND topic_id IS NOT NULL AND topic_id <> %s RETURNING 1",
            (topic_id, topic, topic_id),
        ).fetchone()
    return row is not None


def forget_checkpoint(conn: psycopg.Connection[Any], checkpoint: str) -> None:
    """What the store recorded of the batches of a checkpoint location that is being removed:
    a new checkpoint there starts again at batch 0, and none of the old ids may be taken for
    its batches."""
    with conn.transaction():
        conn.execute("DELETE FROM processor_batches WHERE checkpoint = %s", (checkpoint,))
        conn.execute(
            "UPDATE processor_lock SET handed_off_batch = NULL WHERE checkpoint = %s",
            (checkpoint,),
        )


def skip_deleted(conn: psycopg.Connection[Any], low: Mapping[str, int]) -> dict[str, int]:
    """Move the store's end offsets up to the earliest offsets Kafka still holds (records deleted
    by retention before they were counted cannot be counted any more); the records skipped per
    partition."""
    with conn.transaction():
        binding = read_binding(conn, for_update=True)
        if binding is None:
            return {}
        skipped = {
            p: low[p] - end for p, end in binding.end_offsets.items() if p in low and end < low[p]
        }
        if skipped:
            conn.execute(
                "UPDATE pipeline SET end_offsets = %s, updated_at = now()",
                (json.dumps({**binding.end_offsets, **{p: low[p] for p in skipped}}),),
            )
    return skipped
