"""Where the processor starts: the checkpoint (a real offset log on disk) against the topic and
what the store holds, without Kafka or PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cinestream.errors import CheckpointMismatch
from cinestream.settings import Settings
from cinestream.store.checkpoint_lock import StoredCheckpoint
from cinestream.store.pipeline import PipelineBinding
from cinestream.stream.checkpoint import LocalFS
from cinestream.stream.start_plan import TopicState, plan_against

TOPIC = "ratings"
TOPIC_STATE = TopicState({0: 0, 1: 0}, {0: 500, 1: 400}, "id-1")


def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        checkpoint_dir=(tmp_path / "ckpt").as_uri(),
        database_url="postgresql://u:p@127.0.0.1:5432/cinestream",
    )


def store(end: dict[str, int] | None, **kwargs: object) -> StoredCheckpoint:
    binding = None
    if end is not None:
        binding = PipelineBinding(
            TOPIC, "id-1", ("tumbling_1min",), end, 0, 0, kwargs.pop("last", None)
        )  # type: ignore[arg-type]
    return StoredCheckpoint("id-1", 0, None, kwargs.pop("handed_off", None), binding)  # type: ignore[arg-type]


def write_checkpoint(
    tmp_path: Path, initial: dict[int, int], batches: list[dict[int, int]], done: int | None
) -> None:
    """A Structured Streaming checkpoint: the Kafka source's initial offsets, the offset log of
    ``batches`` and the commit log up to ``done``."""
    base = tmp_path / "ckpt"
    (base / "sources" / "0").mkdir(parents=True)
    offsets = json.dumps({TOPIC: {str(p): o for p, o in initial.items()}})
    (base / "sources" / "0" / "0").write_bytes(b"\x00v1\n" + offsets.encode())
    (base / "metadata").write_text('{"id":"q-1"}\n')
    (base / "offsets").mkdir()
    (base / "commits").mkdir()
    for batch_id, end in enumerate(batches):
        line = json.dumps({TOPIC: {str(p): o for p, o in end.items()}})
        (base / "offsets" / str(batch_id)).write_text(f'v1\n{{"batchWatermarkMs":0}}\n{line}\n')
        if done is not None and batch_id <= done:
            (base / "commits" / str(batch_id)).write_text('v1\n{"nextBatchWatermarkMs":0}\n')


def plan(tmp_path: Path, stored: StoredCheckpoint, topic: TopicState = TOPIC_STATE):  # type: ignore[no-untyped-def]
    return plan_against(settings(tmp_path), LocalFS(), stored, topic)


def test_a_new_store_and_no_checkpoint_start_at_earliest(tmp_path: Path) -> None:
    result = plan(tmp_path, store(None))
    assert (result.start_offsets, result.from_store) == ({0: 0, 1: 0}, False)
    assert result.spark_starting_offsets(TOPIC) == "earliest"


def test_no_checkpoint_over_a_store_resumes_where_the_store_ends(tmp_path: Path) -> None:
    # A moved or deleted checkpoint: the store's offsets become Spark's starting offsets.
    result = plan(tmp_path, store({"0": 300, "1": 120}))
    assert result.from_store and result.resumed_batch is None
    assert result.start_offsets == {0: 300, 1: 120} and result.backlog == 200 + 280
    assert json.loads(result.spark_starting_offsets(TOPIC)) == {TOPIC: {"0": 300, "1": 120}}


def test_a_partition_new_to_the_store_starts_at_its_earliest(tmp_path: Path) -> None:
    topic = TopicState({0: 0, 1: 0, 2: 7}, {0: 500, 1: 400, 2: 50}, "id-1")
    result = plan(tmp_path, store({"0": 300, "1": 120}), topic)
    assert result.start_offsets == {0: 300, 1: 120, 2: 7}


def test_resuming_over_records_retention_deleted_is_refused_with_the_loss_named(
    tmp_path: Path,
) -> None:
    topic = TopicState({0: 350, 1: 0}, {0: 500, 1: 400}, "id-1")
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store({"0": 300, "1": 120}), topic)
    assert "partition 0: offsets 300..349" in info.value.problem
    assert "--accept-deleted" in info.value.fix


def test_a_store_of_another_topic_is_refused_naming_both(tmp_path: Path) -> None:
    other = StoredCheckpoint(
        None, 0, None, None, PipelineBinding("movies", "id-9", ("tumbling_1min",), {}, 0, 0, None)
    )
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, other)
    assert "'movies'" in str(info.value) and "'ratings'" in str(info.value)


def test_a_recreated_topic_offers_both_fixes(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store({"0": 300, "1": 120}), TopicState({0: 0}, {0: 10}, "id-2"))
    assert "deleted and recreated (id id-1 -> id-2)" in info.value.problem
    assert "--checkpoint-only" in info.value.fix and "--keep-topics" in info.value.fix


def test_a_checkpoint_where_the_store_ends_resumes(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}, {0: 300, 1: 120}], done=1)
    result = plan(tmp_path, store({"0": 300, "1": 120}))
    assert result.resumed_batch == 1 and result.start_offsets == {0: 300, 1: 120}
    assert result.unfinished_batch is None


def test_a_checkpoint_behind_the_store_is_refused(tmp_path: Path) -> None:
    # Another checkpoint committed since (or this one was restored from an older copy).
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}], done=0)
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store({"0": 300, "1": 120}))
    assert "the checkpoint is behind the store (p0 100 < 300, p1 50 < 120)" in info.value.problem
    assert "--checkpoint-only" in info.value.fix


def test_a_checkpoint_ahead_of_the_store_is_refused(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}, {0: 300, 1: 120}], done=1)
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store({"0": 100, "1": 50}))
    assert "missing from the store" in info.value.problem
    assert "p0 100..300, p1 50..120" in info.value.problem


def test_a_checkpoint_over_an_emptied_store_is_refused(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}], done=0)
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store(None))
    assert "PostgreSQL holds none of them" in info.value.problem


@pytest.mark.parametrize(
    ("done", "store_end", "handed_off", "unfinished"),
    [
        (1, {"0": 100, "1": 50}, 1, 1),  # stopped during batch 1's background commit
        (0, None, 0, 0),  # ... during the first batch's, on a new store
        (1, {"0": 300, "1": 120}, 1, None),  # committed: nothing to read again
        (1, {"0": 100, "1": 50}, 0, "refused"),  # the store lost batch 1 without a hand-off
        (0, None, None, "refused"),  # store emptied after the first batch
        (1, {"0": 0, "1": 0}, 1, "refused"),  # two batches missing: not a stopped hand-off
    ],
)
def test_only_the_one_handed_off_batch_is_read_again(
    tmp_path: Path,
    done: int,
    store_end: dict[str, int] | None,
    handed_off: int | None,
    unfinished: int | str | None,
) -> None:
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}, {0: 300, 1: 120}], done=done)
    stored = store(store_end, handed_off=handed_off)
    if unfinished == "refused":
        with pytest.raises(CheckpointMismatch):
            plan(tmp_path, stored)
    else:
        assert plan(tmp_path, stored).unfinished_batch == unfinished


def test_a_started_checkpoint_must_start_where_the_store_ends(tmp_path: Path) -> None:
    # Spark wrote its initial offsets but planned no batch yet.
    (tmp_path / "ckpt" / "sources" / "0").mkdir(parents=True)
    (tmp_path / "ckpt" / "sources" / "0" / "0").write_bytes(b'\x00v1\n{"ratings":{"0":0,"1":0}}')
    with pytest.raises(CheckpointMismatch):
        plan(tmp_path, store({"0": 300, "1": 120}))
    assert plan(tmp_path, store({"0": 0, "1": 0})).from_store


def test_a_store_one_batch_ahead_of_sparks_commit_log_resumes(tmp_path: Path) -> None:
    # The background commit of batch 1 reached PostgreSQL, the process stopped before Spark wrote
    # commits/1: Spark runs batch 1 again and the store takes it for the replay it is.
    write_checkpoint(tmp_path, {0: 0, 1: 0}, [{0: 100, 1: 50}, {0: 300, 1: 120}], done=0)
    ahead = StoredCheckpoint(
        "id-1",
        2,
        1,
        1,
        PipelineBinding(TOPIC, "id-1", ("tumbling_1min",), {"0": 300, "1": 120}, 0, 0, None),
        "q-1",
    )
    assert plan(tmp_path, ahead).resumed_batch == 1
    # The same store offsets written by another checkpoint's query: refused.
    other = StoredCheckpoint("id-1", 2, 1, 1, ahead.binding, "q-other")
    with pytest.raises(CheckpointMismatch):
        plan(tmp_path, other)


def test_a_batch_to_run_again_from_deleted_offsets_names_the_loss(tmp_path: Path) -> None:
    # Batch 1 was planned (not done) from offset 100; retention has deleted up to 150 since.
    write_checkpoint(tmp_path, {0: 0}, [{0: 100}, {0: 300}], done=0)
    topic = TopicState({0: 150}, {0: 500}, "id-1")
    with pytest.raises(CheckpointMismatch) as info:
        plan(tmp_path, store({"0": 100}), topic)
    assert "partition 0: offsets 100..149 were deleted" in info.value.problem
    assert "--accept-deleted" in info.value.fix
