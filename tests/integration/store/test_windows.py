"""The window store's exactly-once commit and lateness rules on the real PostgreSQL."""

from __future__ import annotations

import os
import socket
import time

import pytest

from cinestream.errors import CheckpointMismatch, ProcessorBusy
from cinestream.metrics import top_movies
from cinestream.store.checkpoint_lock import CheckpointLock
from cinestream.store.commit import BatchCommit, commit_batch
from cinestream.store.connection import connect
from cinestream.store.publication import publish_pending
from cinestream.store.reads import stream_snapshot, top_movie_counts
from cinestream.store.replace import replace_windows
from cinestream.stream.cells import BatchCells
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

T0 = 1_762_797_900_000
W = 60_000
NOW = int(time.time() * 1000)  # T0 is in the past: the wall clock caps nothing below


def cells(*rows: tuple[int, int, int, int]) -> bytes:
    """(window_start_ms, movie_id, half_stars, n) rows of tumbling_1min cells as CSV."""
    return BatchCells.from_rows(
        ("tumbling_1min", ws, ws + W, m, h, n) for ws, m, h, n in rows
    ).to_csv()


def commit(conn, batch_id: int, data: bytes, max_event: int | None, wall_clock: int = NOW):  # type: ignore[no-untyped-def]
    return commit_batch(
        conn,
        BatchCommit(
            checkpoint="ckpt",
            topic="ratings",
            topic_id="id",
            batch_id=batch_id,
            cells_csv=data,
            invalid=0,
            max_event_ms=max_event,
            wall_clock_ms=wall_clock,
            allowed_lateness_ms=2 * W,
            end_offsets={"0": batch_id},
            start_offsets=None if batch_id == 0 else {"0": batch_id - 1},
            primary_window_type="tumbling_1min",
        ),
    )


def test_a_replayed_batch_changes_nothing(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url) as conn:
        first = commit(conn, 0, cells((T0, 1, 8, 3), (T0, 2, 10, 1)), T0 + 10)
        assert not first.already_committed and first.valid == 4
        replay = commit(conn, 0, cells((T0, 1, 8, 3), (T0, 2, 10, 1)), T0 + 10)
        assert replay.already_committed
        (row,) = conn.execute(
            "SELECT count, avg_rating, p50_rating, p95_rating, top_movies FROM window_metrics"
        ).fetchall()
    assert row == (4, 4.25, 4.0, 5.0, "[1,2]")


def test_top_movies_are_ranked_in_the_store_as_the_metric_ranks_them(pipeline: Pipeline) -> None:
    # Movie 7 leads only once its two windows are summed; 12, 5, 3 tie at 4 (written largest id
    # first: the smaller id must still come first); the window at T0 + 2W lies outside
    # [T0, T0 + 2W) and must not count.
    rows = [
        (T0, 7, 8, 2), (T0 + W, 7, 2, 3), (T0, 12, 10, 4), (T0, 5, 10, 4), (T0 + W, 3, 6, 4),
        (T0, 9, 4, 1), (T0 + 2 * W, 9, 4, 50),
    ]  # fmt: skip
    summed: dict[int, int] = {}
    for ws, movie, _, n in rows:
        if ws < T0 + 2 * W:
            summed[movie] = summed.get(movie, 0) + n
    with connect(pipeline.settings.resolved_database_url) as conn:
        commit(conn, 0, cells(*rows), T0 + 2 * W + 10)
        ranked = top_movie_counts(conn, "tumbling_1min", T0, T0 + 2 * W, 10)
        assert ranked == [(7, 5), (3, 4), (5, 4), (12, 4), (9, 1)]
        assert [m for m, _ in ranked] == top_movies(summed.items(), 10)
        assert top_movie_counts(conn, "tumbling_1min", T0, T0 + 2 * W, 3) == ranked[:3]
        assert top_movie_counts(conn, "tumbling_1min", T0 + 3 * W, T0 + 4 * W, 10) == []


def test_a_window_grows_across_batches(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url) as conn:
        commit(conn, 0, cells((T0, 1, 2, 1)), T0 + 1)
        commit(conn, 1, cells((T0, 2, 10, 2), (T0, 1, 2, 1)), T0 + 2)
        (row,) = conn.execute("SELECT count, top_movies, p50_rating FROM window_metrics").fetchall()
    assert row == (4, "[1,2]", 1.0)


def test_records_for_closed_windows_are_counted_late_and_not_added(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url) as conn:
        commit(conn, 0, cells((T0, 1, 8, 5)), T0 + 5 * W)  # watermark -> T0 + 3W
        late = commit(
            conn, 1, cells((T0, 1, 8, 2), (T0 + 2 * W, 3, 6, 1), (T0 + 4 * W, 4, 6, 1)), T0 + 5 * W
        )
        # window T0 closed (end T0+W <= T0+3W), window T0+2W too (end = T0+3W); T0+4W is open
        assert (late.valid, late.late) == (1, 3)
        counts = dict(conn.execute("SELECT window_start, count FROM window_metrics").fetchall())
        states = conn.execute(
            "SELECT window_start_ms, closed_by, late_count FROM window_state ORDER BY 1"
        ).fetchall()
        assert conn.execute("SELECT late_total, watermark_ms FROM processor_state").fetchone() == (
            3,
            T0 + 3 * W,
        )
    assert sorted(counts.values()) == [1, 5]
    assert states == [(T0, "watermark", 2), (T0 + 2 * W, "watermark", 1), (T0 + 4 * W, None, 0)]


def test_the_watermark_never_goes_back(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url) as conn:
        assert commit(conn, 0, cells((T0 + 9 * W, 1, 8, 1)), T0 + 9 * W).watermark_ms == T0 + 7 * W
        assert commit(conn, 1, cells((T0 + 8 * W, 1, 8, 1)), T0 + 8 * W).watermark_ms == T0 + 7 * W


def test_a_second_lock_holder_is_refused(pipeline: Pipeline) -> None:
    url = pipeline.settings.resolved_database_url
    first, second = CheckpointLock(url, "file:///x"), CheckpointLock(url, "file:///x")
    assert first.try_acquire()
    try:
        assert not second.try_acquire()
        holder = second.holder() or ""
        # Who holds it: this process (host and pid), its backend and application.
        assert "cinestream-processor" in holder
        assert f"pid {os.getpid()} on {socket.gethostname()}" in holder
    finally:
        first.release()
    assert second.try_acquire()
    second.release()


def test_a_read_between_batches_does_not_swallow_the_next_commit(pipeline: Pipeline) -> None:
    # The processor publishes pending windows between two commits. That read must not leave a
    # transaction open, or the next commit becomes a savepoint inside it: not committed, and its
    # temp table still there for the batch after (found by the kill -9 test).
    url = pipeline.settings.resolved_database_url
    with connect(url) as conn:
        commit(conn, 0, cells((T0, 1, 8, 1)), T0)
        assert publish_pending(conn, lambda metrics: None) == 1
        commit(conn, 1, cells((T0, 2, 8, 1)), T0)
        commit(conn, 2, cells((T0, 3, 8, 1)), T0)
        with connect(url) as other:  # committed, not just visible to this session
            assert other.execute("SELECT count FROM window_metrics").fetchone() == (3,)
        # A connection left inside a transaction is refused, not nested into a savepoint.
        conn.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="no open transaction"):
            commit(conn, 3, cells((T0, 4, 8, 1)), T0)


def _batch(
    batch_id: int,
    end: int,
    start: int | None,
    token: int | None = None,
    checkpoint: str = "ckpt",
    topic: str = "ratings",
    query_id: str | None = None,
) -> BatchCommit:
    return BatchCommit(
        checkpoint=checkpoint,
        topic_id="id",
        batch_id=batch_id,
        cells_csv=cells((T0, batch_id + 1, 8, 1)),
        invalid=0,
        max_event_ms=T0,
        wall_clock_ms=NOW,
        allowed_lateness_ms=2 * W,
        end_offsets={"0": end},
        primary_window_type="tumbling_1min",
        start_offsets=None if start is None else {"0": start},
        fencing_token=token,
        topic=topic,
        query_id=query_id,
    )


def test_a_checkpoint_behind_the_store_is_refused_not_skipped(pipeline: Pipeline) -> None:
    # The store holds batches 0..3 (offsets 0..40); a checkpoint restored from an older copy
    # replans batch 2 over other offsets, then batch 4 from elsewhere: both refused, nothing added.
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        for b in range(4):
            commit_batch(conn, _batch(b, 10 * (b + 1), None if b == 0 else 10 * b))
        assert commit_batch(conn, _batch(2, 30, 20)).already_committed  # a true replay
        with pytest.raises(CheckpointMismatch, match="checkpoint is behind the store") as info:
            commit_batch(conn, _batch(2, 55, 20))
        # The fix keeps the windows: without a checkpoint the processor resumes from the store.
        assert "cinestream reset --checkpoint-only" in str(info.value)
        with pytest.raises(CheckpointMismatch, match="partition 0 starts at 35 but the store"):
            commit_batch(conn, _batch(4, 60, 35))
        commit_batch(conn, _batch(4, 60, 40))  # where batch 3 ended: accepted
        (total,) = conn.execute("SELECT sum(count) FROM window_metrics").fetchone()
    assert total == 5


def test_a_lost_batch_is_refused_even_when_the_store_never_saw_the_batch_before_it(
    pipeline: Pipeline,
) -> None:
    # Batch 1 never reached the store; batch 2 starts where batch 1 ended. The old check only
    # compared with a stored batch 1 and let it pass; the store's own end offsets refuse it.
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit_batch(conn, _batch(0, 10, None))
        with pytest.raises(CheckpointMismatch, match="partition 0 starts at 20 but the store ends"):
            commit_batch(conn, _batch(2, 30, 20))
        with pytest.raises(CheckpointMismatch, match="start offsets are unknown"):
            commit_batch(conn, _batch(2, 30, None))
        assert conn.execute("SELECT sum(count) FROM window_metrics").fetchone() == (1,)


def test_a_second_checkpoint_over_the_same_topic_cannot_count_it_again(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit_batch(conn, _batch(0, 10, None, checkpoint="a", query_id="qa"))
        commit_batch(conn, _batch(1, 20, 10, checkpoint="a", query_id="qa"))
        # A moved checkpoint that read the topic from earliest again: refused.
        with pytest.raises(CheckpointMismatch, match="does not start where the store ends"):
            commit_batch(conn, _batch(0, 10, 0, checkpoint="b", query_id="qb"))
        # Started where the store ends (what the start plan gives a new checkpoint): counted.
        commit_batch(conn, _batch(0, 30, 20, checkpoint="b", query_id="qb"))
        # A checkpoint recreated at location "a": its batch 1 is not a replay of the old one's.
        commit_batch(conn, _batch(1, 40, 30, checkpoint="a", query_id="qa2"))
        assert conn.execute("SELECT sum(count) FROM window_metrics").fetchone() == (4,)
        assert conn.execute("SELECT end_offsets FROM pipeline").fetchone() == ({"0": 40},)


def test_a_store_holds_one_topic(pipeline: Pipeline) -> None:
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit_batch(conn, _batch(0, 10, None))
        with pytest.raises(CheckpointMismatch, match="holds the windows of topic 'ratings'") as e:
            commit_batch(conn, _batch(0, 10, None, checkpoint="other", topic="movies"))
        assert "'movies'" in str(e.value) and "CINESTREAM_DATABASE_URL" in str(e.value)
        assert conn.execute("SELECT count(*) FROM processor_batches").fetchone() == (1,)


def test_a_processor_that_lost_its_lock_cannot_commit(pipeline: Pipeline) -> None:
    url = pipeline.settings.resolved_database_url
    first, second = CheckpointLock(url, "ckpt"), CheckpointLock(url, "ckpt")
    assert first.try_acquire() and first.token is not None
    try:
        assert not second.try_acquire()
        with connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first.session_pid(),))
        # The first one's session is gone: the lock is free, and a second processor takes it.
        assert second.try_acquire() and second.token == first.token + 1
        with connect(url, autocommit=True) as conn:
            with pytest.raises(ProcessorBusy, match="fencing token"):
                commit_batch(conn, _batch(0, 10, None, token=first.token))
            assert conn.execute("SELECT count(*) FROM processor_batches").fetchone() == (0,)
            assert not commit_batch(conn, _batch(0, 10, None, token=second.token)).already_committed
        # And the first one, checking its lock before the next commit, stops.
        with pytest.raises(ProcessorBusy, match="another processor holds it"):
            first.ensure_held()
    finally:
        first.release()
        second.release()


def test_the_lock_session_probes_its_connection(pipeline: Pipeline) -> None:
    # After a host crash the server drops the session (and the lock) within seconds.
    lock = CheckpointLock(pipeline.settings.resolved_database_url, "ckpt")
    assert lock.try_acquire()
    try:
        with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
            pid = lock.session_pid()
            (app,) = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
        assert app == "cinestream-processor"
        assert lock._conn is not None
        for name, value in (("tcp_keepalives_idle", "5"), ("idle_session_timeout", "0")):
            assert lock._conn.execute(f"SHOW {name}").fetchone()[0] in (value, f"{value}s")
    finally:
        lock.release()


def test_every_committed_change_is_published_once_and_a_failed_publish_stays_pending(
    pipeline: Pipeline,
) -> None:
    sent: list[list[tuple[int, int]]] = []

    def collect(metrics):  # type: ignore[no-untyped-def]
        sent.append([(m.window_start_ms, m.count) for m in metrics])

    def broken(metrics):  # type: ignore[no-untyped-def]
        raise RuntimeError("broker down")

    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0, 1, 8, 2), (T0 + W, 1, 8, 1)), T0 + W)
        assert publish_pending(conn, collect) == 2
        assert publish_pending(conn, collect) == 0  # nothing changed since
        commit(conn, 1, cells((T0, 2, 8, 1)), T0 + W)
        with pytest.raises(RuntimeError):
            publish_pending(conn, broken)
        assert publish_pending(conn, collect) == 1  # still pending after the failure
    assert sent == [[(T0, 2), (T0 + W, 1)], [(T0, 3)]]


def test_a_backfill_keeps_counting_late_ratings_that_came_after_its_snapshot(
    pipeline: Pipeline,
) -> None:
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0, 1, 8, 5)), T0 + 5 * W)  # closes the window T0
        commit(conn, 1, cells((T0, 1, 8, 2)), T0 + 5 * W)  # 2 late
        snapshot = stream_snapshot(conn, T0, T0 + W)
        assert snapshot.late_counts == {("tumbling_1min", T0): 2}
        assert snapshot.end_offsets == {"0": 1} and snapshot.watermark_ms == T0 + 3 * W
        commit(conn, 2, cells((T0, 1, 8, 3)), T0 + 5 * W)  # 3 more late, after the snapshot
        # The backfill read the 5 + 2 ratings of the snapshot's offsets and restores them.
        replaced = replace_windows(conn, cells((T0, 1, 8, 7)), late_before=snapshot.late_counts)
        late = conn.execute("SELECT late_count FROM window_state").fetchone()
    assert [m.count for m in replaced.metrics] == [7] and late == (3,)


def test_a_backfill_never_shrinks_a_window_the_stream_counted(pipeline: Pipeline) -> None:
    # Retention deleted part of the window's ratings: the recomputation finds 3 of the 5.
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0, 1, 8, 5), (T0 + W, 1, 8, 1)), T0 + 5 * W)
        replaced = replace_windows(conn, cells((T0, 1, 8, 3), (T0 + W, 2, 8, 2)))
        counts = conn.execute("SELECT count FROM window_metrics ORDER BY window_start").fetchall()
    assert replaced.kept == [("tumbling_1min", T0, 3, 5)]
    assert [(m.window_start_ms, m.count) for m in replaced.metrics] == [(T0 + W, 2)]
    assert counts == [(5,), (2,)]


def test_a_backfill_that_found_no_stream_refuses_when_one_committed_meanwhile(
    pipeline: Pipeline,
) -> None:
    from cinestream.store.replace import BackfillRaced

    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        snapshot = stream_snapshot(conn, T0, T0 + W)
        assert snapshot.watermark_ms is None  # no stream yet
        commit(conn, 0, cells((T0, 1, 8, 5)), T0)  # a first stream commits meanwhile
        with pytest.raises(BackfillRaced, match="run the backfill again"):
            replace_windows(conn, cells((T0, 1, 8, 2)), stream_seen=False)
        assert conn.execute("SELECT count FROM window_metrics").fetchone() == (5,)


def test_pruning_drops_old_detail_keeps_metrics_and_the_last_batch(pipeline: Pipeline) -> None:
    from cinestream.store.retention import prune_detail

    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0, 1, 8, 2), (T0 + 10 * W, 2, 6, 1)), T0 + 10 * W)
        commit(conn, 1, cells((T0 + 10 * W, 3, 6, 1)), T0 + 10 * W)
        publish_pending(conn, lambda metrics: None)
        # Everything ended before the retention: the detail of the closed window goes (batch
        # records older than now but the last); the window T0+10W is still open (the watermark
        # is T0+8W) and keeps its detail, however old.
        pruned = prune_detail(conn, int(time.time() * 1000) + 1_000)
        assert (pruned.windows, pruned.batches) == (1, 1)
        assert conn.execute("SELECT count(*) FROM window_movie_counts").fetchone() == (2,)
        # Both windows keep their state (the pruned one its late count, for a later backfill).
        assert conn.execute(
            "SELECT window_start_ms, closed_by FROM window_state ORDER BY 1"
        ).fetchall() == [(T0, "watermark"), (T0 + 10 * W, None)]
        assert prune_detail(conn, int(time.time() * 1000) + 1_000).windows == 0  # done once
        assert conn.execute("SELECT sum(count) FROM window_metrics").fetchone() == (4,)
        assert conn.execute("SELECT batch_id FROM processor_batches").fetchall() == [(1,)]
        # The open window goes on growing from its detail; a rating for the pruned one is late.
        result = commit(conn, 2, cells((T0 + 10 * W, 4, 6, 1), (T0, 5, 6, 1)), T0 + 10 * W)
        assert (result.valid, result.late) == (1, 1)
        counts = conn.execute("SELECT count FROM window_metrics ORDER BY window_start").fetchall()
        assert counts == [(2,), (3,)]
        # The next batch is still checked against where the store ends.
        with pytest.raises(CheckpointMismatch):
            commit_batch(conn, _batch(3, 999, 998))


def test_a_batch_row_without_query_id_is_a_replay_only_where_the_store_ends(
    pipeline: Pipeline,
) -> None:
    # Rows written before query ids were recorded: a replay of the last one is recognised; the
    # same batch id of a new checkpoint at that location (the store rebound to a recreated
    # topic, ending nowhere) is not taken for it, and is counted.
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit_batch(conn, _batch(0, 10, None))  # query id NULL, as before the migration
        assert commit_batch(conn, _batch(0, 10, None, query_id="q-new")).already_committed
        conn.execute("UPDATE pipeline SET end_offsets = '{}'::jsonb")
        assert not commit_batch(conn, _batch(0, 10, None, query_id="q-new")).already_committed
        assert conn.execute("SELECT sum(count) FROM window_metrics").fetchone() == (2,)


def test_a_backfill_that_cannot_read_a_windows_late_ratings_keeps_it(pipeline: Pipeline) -> None:
    # 5 on time, then 3 late; retention deleted 2 of the late ones before the backfill read the
    # topic: it finds 6 of the 8. Replacing would "restore" 3 late ratings it never read (found
    # by the model walk, seed 20261130, step 140): the window and its late count stay.
    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0, 1, 8, 5)), T0 + 5 * W)
        commit(conn, 1, cells((T0, 1, 8, 3)), T0 + 5 * W)  # late
        snapshot = stream_snapshot(conn, T0, T0 + W)
        replaced = replace_windows(conn, cells((T0, 1, 8, 6)), late_before=snapshot.late_counts)
        state = conn.execute("SELECT late_count, closed_by FROM window_state").fetchone()
        count = conn.execute("SELECT count FROM window_metrics").fetchone()
    assert replaced.kept == [("tumbling_1min", T0, 6, 8)] and replaced.metrics == []
    assert state == (3, "watermark") and count == (5,)


def test_a_pruned_window_of_late_ratings_keeps_its_late_count_for_the_backfill(
    pipeline: Pipeline,
) -> None:
    # A window whose ratings all came late (no metric row, 4 late), then pruned; retention left
    # 1 of them for the backfill. Pruning used to delete its window_state row with the late
    # count: the backfill then replaced it with that 1 rating (the model walk, seed 20261201,
    # step 73: 29 late ratings, 1 left). Its state stays, and so does the window.
    from cinestream.store.retention import prune_detail

    with connect(pipeline.settings.resolved_database_url, autocommit=True) as conn:
        commit(conn, 0, cells((T0 + 10 * W, 1, 8, 2)), T0 + 10 * W)
        commit(conn, 1, cells((T0, 2, 6, 4)), T0 + 10 * W)  # late: T0's window is closed
        publish_pending(conn, lambda metrics: None)
        prune_detail(conn, int(time.time() * 1000) + 1_000)
        snapshot = stream_snapshot(conn, T0, T0 + W)
        replaced = replace_windows(conn, cells((T0, 2, 6, 1)), late_before=snapshot.late_counts)
        state = conn.execute(
            "SELECT late_count, closed_by FROM window_state WHERE window_start_ms = %s", (T0,)
        ).fetchone()
        count = conn.execute(
            "SELECT count(*) FROM window_metrics WHERE window_start = to_timestamp(%s)",
            (T0 / 1000,),
        ).fetchone()
    assert snapshot.late_counts == {("tumbling_1min", T0): 4}
    assert replaced.kept == [("tumbling_1min", T0, 1, 4)] and replaced.metrics == []
    assert state == (4, "watermark") and count == (0,)
