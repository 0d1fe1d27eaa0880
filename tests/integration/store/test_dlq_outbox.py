"""The DLQ's outbox on the real PostgreSQL and Kafka: each invalid record reaches the DLQ once,
whichever way a publication or a commit ends."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import pytest

from cinestream.kafka import admin
from cinestream.kafka.produce import new_producer, publish_dlq
from cinestream.kafka.read import DlqReader, dlq_source, read_all
from cinestream.settings import Settings
from cinestream.store import schema
from cinestream.store.commit import BatchCommit, commit_batch
from cinestream.store.connection import connect
from cinestream.store.dlq_outbox import DlqRow, publish_dlq_outbox
from cinestream.stream.cells import BatchCells
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

T0 = 1_762_797_900_000
W = 60_000


def dlq_rows(settings: Settings, *coords: tuple[int, int]) -> tuple[DlqRow, ...]:
    """DLQ messages of invalid records at ``coords`` (partition, offset) of the ratings topic."""
    return tuple(
        (
            p,
            o,
            b"k-%d-%d" % (p, o),
            json.dumps(
                {
                    "error": "value is not a valid JSON object",
                    "raw": f"bad {p}/{o}",
                    "source_topic": settings.ratings_topic,
                    "source_partition": p,
                    "source_offset": o,
                }
            ).encode(),
        )
        for p, o in coords
    )


def commit(conn: psycopg.Connection[Any], batch_id: int, dlq: Sequence[DlqRow]) -> bool:
    """Commit batch ``batch_id`` (offsets 10*id .. 10*id+10 of partition 0) with one valid
    rating and ``dlq``; True when it was a replay."""
    return commit_batch(
        conn,
        BatchCommit(
            checkpoint="ckpt",
            topic="ratings",
            topic_id="id",
            batch_id=batch_id,
            cells_csv=BatchCells.from_rows([("tumbling_1min", T0, T0 + W, 1, 8, 1)]).to_csv(),
            invalid=len(dlq),
            max_event_ms=T0,
            wall_clock_ms=int(time.time() * 1000),
            allowed_lateness_ms=2 * W,
            end_offsets={"0": 10 * batch_id + 10},
            start_offsets=None if batch_id == 0 else {"0": 10 * batch_id},
            primary_window_type="tumbling_1min",
            dlq=tuple(dlq),
        ),
    ).already_committed


def outbox(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    return [
        (int(p), int(o))
        for p, o in conn.execute(
            "SELECT source_partition, source_offset FROM dlq_outbox ORDER BY 1, 2"
        )
    ]


def in_dlq(settings: Settings) -> Counter[tuple[int, int]]:
    """How often each (source partition, source offset) of this pipeline's ratings topic is in
    the DLQ topic."""
    found: Counter[tuple[int, int]] = Counter()
    for msg in read_all(settings, settings.dlq_topic):
        source = dlq_source(msg.value())
        assert source is not None, msg.value()
        if source[0] == settings.ratings_topic:
            found[source[1:]] += 1
    return found


def kafka_publish(settings: Settings) -> Any:
    producer = new_producer(settings)
    return lambda records: publish_dlq(settings, records, producer)


def test_a_replayed_batch_enqueues_nothing_twice(pipeline: Pipeline) -> None:
    s = pipeline.settings
    first, second = dlq_rows(s, (0, 3), (0, 7)), dlq_rows(s, (0, 12))
    with connect(s.resolved_database_url, autocommit=True) as conn:
        assert not commit(conn, 0, first)
        assert commit(conn, 0, first)  # Spark ran batch 0 again: nothing added
        assert outbox(conn) == [(0, 3), (0, 7)]
        assert not commit(conn, 1, second)
        assert publish_dlq_outbox(conn, DlqReader(s), kafka_publish(s)).published == 3
        # A replay after the publication adds nothing either: the outbox stays empty.
        assert commit(conn, 1, second)
        assert outbox(conn) == []
        # The key refuses a record twice while it waits, inside one batch too.
        assert not commit(conn, 2, dlq_rows(s, (1, 5), (1, 5)))
        assert outbox(conn) == [(1, 5)]
        (invalid,) = conn.execute("SELECT sum(invalid) FROM processor_batches").fetchone()
    assert invalid == 5
    assert in_dlq(s) == {(0, 3): 1, (0, 7): 1, (0, 12): 1}


def test_publish_then_delete_in_order_and_in_chunks(pipeline: Pipeline) -> None:
    s = pipeline.settings
    coords = [(1, 4), (0, 9), (0, 2), (2, 0), (1, 1)]
    chunks: list[list[bytes]] = []
    publish = kafka_publish(s)

    def recording(records: Sequence[tuple[bytes | None, bytes]]) -> Mapping[int, int]:
        chunks.append([key or b"" for key, _ in records])
        return publish(records)  # type: ignore[no-any-return]

    with connect(s.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, dlq_rows(s, *coords))
        done = publish_dlq_outbox(conn, DlqReader(s), recording, max_rows=2)
        assert (done.already_there, done.published) == (0, 5)
        assert outbox(conn) == []
        ((offsets, in_flight),) = conn.execute(
            "SELECT end_offsets, in_flight FROM dlq_publication WHERE dlq_topic = %s",
            (s.dlq_topic,),
        ).fetchall()
        # Nothing to do: no transaction, no Kafka.
        assert publish_dlq_outbox(conn, DlqReader(s), recording).published == 0
    assert chunks == [[b"k-0-2", b"k-0-9"], [b"k-1-1", b"k-1-4"], [b"k-2-0"]]
    assert (offsets, in_flight) == ({"0": 5}, False)
    messages = read_all(s, s.dlq_topic)
    assert [m.key() for m in messages] == [b"k-0-2", b"k-0-9", b"k-1-1", b"k-1-4", b"k-2-0"]
    assert in_dlq(s) == dict.fromkeys(sorted(coords), 1)


def test_a_chunk_holds_one_large_message_at_least(pipeline: Pipeline) -> None:
    s = pipeline.settings
    sizes: list[int] = []
    publish = kafka_publish(s)

    def recording(records: Sequence[tuple[bytes | None, bytes]]) -> Mapping[int, int]:
        sizes.append(len(records))
        return publish(records)  # type: ignore[no-any-return]

    with connect(s.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, dlq_rows(s, (0, 1), (0, 2), (0, 3)))
        assert publish_dlq_outbox(conn, DlqReader(s), recording, max_bytes=1).published == 3
    assert sizes == [1, 1, 1]


def test_a_failed_publish_leaves_the_rows_for_the_next_publisher(pipeline: Pipeline) -> None:
    s = pipeline.settings
    coords = [(0, 1), (0, 2), (0, 3), (0, 4)]

    def kafka_down(records: Sequence[tuple[bytes | None, bytes]]) -> Mapping[int, int]:
        raise RuntimeError("Kafka is down")

    with connect(s.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, dlq_rows(s, *coords))
        with pytest.raises(RuntimeError, match="Kafka is down"):
            publish_dlq_outbox(conn, DlqReader(s), kafka_down)
        assert outbox(conn) == coords
        assert conn.execute("SELECT in_flight FROM dlq_publication").fetchall() == [(True,)]
        # The connection is usable (no transaction left open, the publishers' lock released):
        # a second session publishes.
        with connect(s.resolved_database_url, autocommit=True) as other:
            done = publish_dlq_outbox(other, DlqReader(s), kafka_publish(s))
        assert (done.already_there, done.published) == (0, 4)
        assert outbox(conn) == []
    assert in_dlq(s) == dict.fromkeys(coords, 1)


def test_a_publication_cut_short_after_delivery_is_read_back_not_published_again(
    pipeline: Pipeline,
) -> None:
    # Kafka acknowledged part of a publication (or all of it), then the publisher's session died
    # before its DELETE committed: the next publisher finds those records in the topic.
    s = pipeline.settings
    url = s.resolved_database_url
    publish = kafka_publish(s)
    with connect(url, autocommit=True) as conn:
        commit(conn, 0, dlq_rows(s, (0, 1), (0, 2)))
        assert publish_dlq_outbox(conn, DlqReader(s), publish).published == 2  # offsets 0, 1
        commit(conn, 1, dlq_rows(s, (0, 11), (0, 12), (0, 13), (1, 14)))
    # Records written by others since (Spark's sink on the fallback path, another pipeline on
    # the same DLQ with the same coordinates): not the outbox's, left alone.
    other_topic = json.dumps({"source_topic": "other", "source_partition": 0, "source_offset": 13})
    publish([(b"other", other_topic.encode())])

    dying = connect(url, autocommit=True)

    def delivered_then_died(records: Sequence[tuple[bytes | None, bytes]]) -> Mapping[int, int]:
        publish(records[:3])  # three delivered: (0, 11), (0, 12), (0, 13)
        with connect(url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (dying.info.backend_pid,))
        raise RuntimeError("killed before the fourth")

    with pytest.raises(RuntimeError, match="killed before the fourth"):
        publish_dlq_outbox(dying, DlqReader(s), delivered_then_died, max_rows=4)
    dying.close()
    with connect(url, autocommit=True) as conn:
        assert outbox(conn) == [(0, 11), (0, 12), (0, 13), (1, 14)]
        done = publish_dlq_outbox(conn, DlqReader(s), publish)
        assert (done.already_there, done.published) == (3, 1)
        assert outbox(conn) == []
        ((offsets, in_flight),) = conn.execute(
            "SELECT end_offsets, in_flight FROM dlq_publication"
        ).fetchall()
    assert in_dlq(s) == dict.fromkeys([(0, 1), (0, 2), (0, 11), (0, 12), (0, 13), (1, 14)], 1)
    assert (offsets, in_flight) == ({"0": 7}, False)


def test_the_read_back_reads_each_partition_from_where_the_last_publication_ended(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DLQ of three partitions. Records published earlier (and committed) stay in the topic
    # with coordinates that a later, cut-short publication's rows share: only what was written
    # after the stored offsets counts as published.
    monkeypatch.setenv("CINESTREAM_DLQ_TOPIC", pipeline.settings.dlq_topic + "3")
    monkeypatch.setenv("CINESTREAM_DLQ_PARTITIONS", "3")
    s = Settings()
    admin.create_topics(s)
    publish = kafka_publish(s)
    url = s.resolved_database_url
    rows = dlq_rows(s, *[(0, o) for o in range(30)])
    with connect(url, autocommit=True) as conn:
        commit(conn, 0, rows)
        assert publish_dlq_outbox(conn, DlqReader(s), publish).published == 30
        stored = conn.execute("SELECT end_offsets FROM dlq_publication").fetchone()
        assert stored is not None and sum(stored[0].values()) == 30
        # The same coordinates again in the outbox (as a store reset with --keep-topics would
        # enqueue them): they were published before the stored offsets, so they are published
        # again; the cut-short publication's first 10 are not.
        conn.execute(
            "INSERT INTO dlq_outbox SELECT * FROM unnest(%s::int[], %s::bigint[], "
            "%s::bytea[], %s::bytea[])",
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ),
        )

    def ten_then_fail(records: Sequence[tuple[bytes | None, bytes]]) -> Mapping[int, int]:
        publish(records[:10])
        raise RuntimeError("cut short")

    with connect(url, autocommit=True) as conn:
        with pytest.raises(RuntimeError, match="cut short"):
            publish_dlq_outbox(conn, DlqReader(s), ten_then_fail)
        done = publish_dlq_outbox(conn, DlqReader(s), publish)
        assert (done.already_there, done.published) == (10, 20)
    assert in_dlq(s) == dict.fromkeys([(0, o) for o in range(30)], 2)


def test_reset_empties_the_outbox(pipeline: Pipeline) -> None:
    s = pipeline.settings
    with connect(s.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, dlq_rows(s, (0, 1)))
        schema.truncate_all(conn)
        assert outbox(conn) == []
        assert conn.execute("SELECT count(*) FROM dlq_publication").fetchone() == (0,)
