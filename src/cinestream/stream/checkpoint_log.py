"""A Structured Streaming checkpoint's log, read through its storage
(:mod:`cinestream.stream.checkpoint`): the offsets of each batch, where the query started, the
batches Spark marks done, the query's id; and the one change the processor makes to it (a batch
marked not done, to be read again)."""

from __future__ import annotations

import json

from cinestream.errors import CinestreamError
from cinestream.stream.checkpoint import CheckpointFS, WritableCheckpointFS


def parse_offsets_file(text: str) -> dict[str, dict[int, int]]:
    """``offsets/<batch>`` holds "v1", the batch metadata, then one JSON line per source."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v"):
        raise ValueError("not a Structured Streaming offsets file")
    result: dict[str, dict[int, int]] = {}
    for line in lines[2:]:
        if line.strip() == "-":
            continue
        for topic, partitions in json.loads(line).items():
            result[topic] = {int(p): int(o) for p, o in partitions.items()}
    return result


def latest_batch(names: list[str]) -> int | None:
    """The highest batch id among a log directory's file names."""
    batches = [int(n) for n in names if n.isdigit()]
    return max(batches) if batches else None


def checkpoint_offsets(
    fs: CheckpointFS, checkpoint: str, batch_id: int | None = None
) -> tuple[int | None, dict[str, dict[int, int]]]:
    """(batch id, end offsets) of ``batch_id`` or of the newest batch in the offset log."""
    directory = checkpoint.rstrip("/") + "/offsets"
    if batch_id is None:
        batch_id = latest_batch(fs.list_names(directory))
        if batch_id is None:
            return None, {}
    return batch_id, parse_offsets_file(fs.read_text(f"{directory}/{batch_id}"))


def initial_offsets(fs: CheckpointFS, checkpoint: str) -> dict[str, dict[int, int]]:
    """Where the checkpoint's query started (the Kafka source's ``sources/0/0``: a zero byte,
    "v1", then the offsets' JSON); empty when the query has not started yet."""
    path = checkpoint.rstrip("/") + "/sources/0/0"
    if not fs.exists(path):
        return {}
    text = fs.read_text(path).lstrip("\x00")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("v"):
        raise ValueError(f"{path} is not a Kafka source's initial offsets")
    return {
        topic: {int(p): int(o) for p, o in partitions.items()}
        for topic, partitions in json.loads("".join(lines[1:])).items()
    }


def query_id(fs: CheckpointFS, checkpoint: str) -> str | None:
    """The id in the checkpoint's ``metadata`` (one per checkpoint, kept across restarts)."""
    path = checkpoint.rstrip("/") + "/metadata"
    if not fs.exists(path):
        return None
    value = json.loads(fs.read_text(path).splitlines()[0]).get("id")
    return None if value is None else str(value)


def committed_batch(fs: CheckpointFS, checkpoint: str) -> int | None:
    """The newest batch Spark's commit log marks done."""
    return latest_batch(fs.list_names(checkpoint.rstrip("/") + "/commits"))


def mark_not_done(fs: WritableCheckpointFS, checkpoint: str, batch_id: int) -> list[str]:
    """Make Spark run ``batch_id`` again at the next start, over the same offsets: remove its
    entry in the commit log and the offsets of any batch planned after it (never run to the end,
    so nothing of them is committed anywhere). The deleted paths."""
    base = checkpoint.rstrip("/")
    if committed_batch(fs, checkpoint) != batch_id:
        raise CinestreamError(f"batch {batch_id} is not the last one done in {checkpoint}")
    latest = latest_batch(fs.list_names(f"{base}/offsets"))
    deleted = [f"{base}/offsets/{b}" for b in range(latest or batch_id, batch_id, -1)]
    deleted.append(f"{base}/commits/{batch_id}")
    for path in deleted:
        fs.delete(path)
    return deleted
