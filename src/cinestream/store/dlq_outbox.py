"""The DLQ's outbox: each invalid record reaches the dead-letter topic once.

A micro-batch's DLQ messages are committed to ``dlq_outbox`` in the transaction that commits its
counts (:func:`enqueue`, called by ``windows.commit_batch``), keyed by where each record is in the
ratings topic: a batch that Spark runs again after a crash is ``already_committed`` and adds
nothing, and the key refuses a record twice while it waits. :func:`publish_dlq_outbox` then hands
the rows to the DLQ topic and deletes them; a failed publication leaves them for the next
publisher, and nothing is lost (it is in PostgreSQL).

One gap is left by any outbox: Kafka acknowledged a publication, then the process died (or lost
PostgreSQL) before the DELETE committed, and the next publisher would publish those records
again. It is closed by reading the DLQ back, exactly where that publication wrote:

- ``dlq_publication`` holds, per DLQ topic, where the topic ended after the last publication (per
  partition, from Kafka's delivery reports) or the last read-back, and ``in_flight``: committed
  before a publication starts, cleared in the transaction of its DELETE. A publication is never
  in flight unseen, whatever kills it (crash, ``kill -9``, a failed delivery, a lost connection).
- A publisher that finds ``in_flight`` set reads the DLQ from those offsets to its end, deletes
  the outbox rows whose ``source_partition``/``source_offset`` are there, records the new end and
  clears the flag, all in one transaction, before it publishes anything.
- Publishers hold a session advisory lock (PostgreSQL releases it when the session dies), so the
  records after the stored offsets are those of the one publication cut short, plus what other
  writers wrote there (Spark's Kafka sink on the maxResultSize fallback, another pipeline sharing
  the topic), which matches no row or is a true duplicate.

Stored offsets rather than "the last N records of each partition": exact when other writers wrote
after the publication, bounded by what was written since rather than by the topic's size, and
the read happens only after a publication was actually cut short.

The Spark-sink fallback (a batch whose DLQ messages exceed ``spark.driver.maxResultSize``) does
not pass through here and stays at-least-once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from cinestream.store.connection import (
    STORE_LOCK,
    WRITER_LOCK_TIMEOUT,
    one,
    require_no_open_transaction,
)

# Serialises the outbox's publishers and read-backs (the next id after connection.py's locks).
DLQ_PUBLISH_LOCK = STORE_LOCK + 3

# (source_partition, source_offset, key, value): an invalid record's place in the ratings topic
# and its DLQ message.
DlqRow = tuple[int, int, bytes | None, bytes]
# Publishes (key, value) messages to the DLQ topic, delivering all or raising; returns the topic's
# end offset after them per partition it wrote to.
Publish = Callable[[Sequence[tuple[bytes | None, bytes]]], Mapping[int, int]]


class DlqTopic(Protocol):
    """The DLQ topic as the read-back sees it (``kafka.read.DlqReader``)."""

    name: str

    def offsets(self) -> dict[int, tuple[int, int]]:
        """The low and high offset of each partition."""
        ...

    def sources(self, starts: Mapping[int, int], ends: Mapping[int, int]) -> set[tuple[int, int]]:
        """``(source_partition, source_offset)`` of this pipeline's records in
        ``[starts, ends)``."""
        ...


@dataclass(frozen=True)
class DlqPublished:
    """What a publication did: rows found already in the topic (a publication cut short before
    it was recorded), deleted instead of published again; rows published."""

    already_there: int = 0
    published: int = 0


def enqueue(conn: psycopg.Connection[Any], rows: Sequence[DlqRow]) -> int:
    """Add a batch's DLQ messages to the outbox, inside the caller's transaction; a record
    already waiting stays as it is. Returns how many were added."""
    if not rows:
        return 0
    conn.execute(
        "CREATE TEMP TABLE batch_dlq (source_partition integer, source_offset bigint, key bytea, "
        "value bytea) ON COMMIT DROP"
    )
    with conn.cursor().copy(
        "COPY batch_dlq (source_partition, source_offset, key, value) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)
    return conn.execute(
        "INSERT INTO dlq_outbox (source_partition, source_offset, key, value) "
        "SELECT source_partition, source_offset, key, value FROM batch_dlq "
        "ON CONFLICT (source_partition, source_offset) DO NOTHING"
    ).rowcount


def publish_dlq_outbox(
    conn: psycopg.Connection[Any],
    topic: DlqTopic,
    publish: Publish,
    *,
    max_rows: int = 10_000,
    max_bytes: int = 64 * 2**20,
) -> DlqPublished:
    """Publish the outbox to ``topic`` through ``publish`` (which must deliver or raise), in
    (source partition, offset) order and chunks of at most ``max_rows`` rows and ``max_bytes``
    (or one row), deleting each chunk once delivered. First, if a publication was cut short,
    delete the rows it already put in the topic (see the module's docstring).

    A failed ``publish`` raises and leaves its chunk in the outbox, marked in flight, for the
    next publisher.
    """
    require_no_open_transaction(conn, "publish_dlq_outbox")
    if not one(conn, "SELECT EXISTS (SELECT 1 FROM dlq_outbox)")[0]:
        return DlqPublished()
    with conn.transaction():
        # A session lock, released by PostgreSQL if this session dies mid-publication.
        conn.execute(f"SET LOCAL lock_timeout = '{WRITER_LOCK_TIMEOUT}'")
        conn.execute("SELECT pg_advisory_lock(%s)", (DLQ_PUBLISH_LOCK,))
    try:
        already_there = _after_a_cut_short_publication(conn, topic)
        published = 0
        while rows := _next_rows(conn, max_rows, max_bytes):
            with conn.transaction():
                conn.execute(
                    "UPDATE dlq_publication SET in_flight = true, updated_at = now() "
                    "WHERE dlq_topic = %s",
                    (topic.name,),
                )
            ends = publish([(key, bytes(value)) for _, _, key, value in rows])
            with conn.transaction():
                conn.execute(
                    "DELETE FROM dlq_outbox o USING unnest(%s::integer[], %s::bigint[]) AS k(p, o)"
                    " WHERE o.source_partition = k.p AND o.source_offset = k.o",
                    ([r[0] for r in rows], [r[1] for r in rows]),
                )
                _record_ends(conn, topic.name, ends)
            published += len(rows)
        return DlqPublished(already_there, published)
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (DLQ_PUBLISH_LOCK,))
            except psycopg.OperationalError:
                pass  # the session is gone, and its lock with it


def _after_a_cut_short_publication(conn: psycopg.Connection[Any], topic: DlqTopic) -> int:
    """Under the publishers' lock: if the last publication to ``topic`` was cut short, delete the
    outbox rows it put there (read back from the stored end offsets to the topic's end) and
    record the new end; a topic never published to gets its end recorded. Rows deleted."""
    with conn.transaction():
        row = conn.execute(
            "SELECT end_offsets, in_flight FROM dlq_publication WHERE dlq_topic = %s FOR UPDATE",
            (topic.name,),
        ).fetchone()
        if row is not None and not row[1]:
            return 0
        bounds = topic.offsets()
        ends = {p: high for p, (_, high) in bounds.items()}
        dropped = 0
        if row is None:
            # First publication to this topic: nothing of the outbox's is there yet.
            conn.execute(
                "INSERT INTO dlq_publication (dlq_topic, end_offsets) VALUES (%s, %s) "
                "ON CONFLICT (dlq_topic) DO NOTHING",
                (topic.name, _offsets_json(ends)),
            )
            return 0
        stored = {int(p): int(o) for p, o in (row[0] or {}).items()}
        # A partition with no stored offset is read from its start; one beyond the end (the
        # topic was recreated) reads nothing.
        starts = {p: min(max(stored.get(p, low), low), high) for p, (low, high) in bounds.items()}
        found = sorted(topic.sources(starts, ends))
        if found:
            dropped = conn.execute(
                "DELETE FROM dlq_outbox o USING unnest(%s::integer[], %s::bigint[]) AS k(p, o) "
                "WHERE o.source_partition = k.p AND o.source_offset = k.o",
                ([c[0] for c in found], [c[1] for c in found]),
            ).rowcount
        _record_ends(conn, topic.name, ends)
        return dropped


def _next_rows(conn: psycopg.Connection[Any], max_rows: int, max_bytes: int) -> list[DlqRow]:
    """The outbox's first rows in (source partition, offset) order, at most ``max_rows`` and
    ``max_bytes`` of keys and values (at least one row when there is one)."""
    rows = conn.execute(
        """
        SELECT source_partition, source_offset, key, value FROM (
            SELECT o.*, octet_length(value) + coalesce(octet_length(key), 0) AS size,
                   sum(octet_length(value) + coalesce(octet_length(key), 0))
                       OVER (ORDER BY source_partition, source_offset) AS upto
            FROM dlq_outbox o ORDER BY source_partition, source_offset LIMIT %s
        ) r
        WHERE upto - size < %s
        ORDER BY source_partition, source_offset
        """,
        (max_rows, max_bytes),
    ).fetchall()
    return [(int(p), int(o), key, value) for p, o, key, value in rows]


def _record_ends(conn: psycopg.Connection[Any], dlq_topic: str, ends: Mapping[int, int]) -> None:
    """Record where ``dlq_topic`` ends after a publication or a read-back, and that nothing is in
    flight. Set, not maximised: under the lock these are the topic's newest offsets, and a
    recreated topic starts again at 0."""
    conn.execute(
        "UPDATE dlq_publication SET end_offsets = end_offsets || %s::jsonb, in_flight = false, "
        "updated_at = now() WHERE dlq_topic = %s",
        (_offsets_json(ends), dlq_topic),
    )


def _offsets_json(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): o for p, o in sorted(offsets.items())})
