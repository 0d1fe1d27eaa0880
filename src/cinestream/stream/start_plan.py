"""Where the processor starts, checked before it starts: the checkpoint against the topic and the
store, the one rule about ``latest``, and the stop file that asks a running processor to stop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cinestream.errors import RESET_FIX, CheckpointMismatch, CinestreamError
from cinestream.kafka import admin
from cinestream.settings import Settings
from cinestream.store.checkpoints import StoredCheckpoint, checkpoint_lock_id
from cinestream.stream.checkpoint import CheckpointFS, checkpoint_offsets, committed_batch

LATEST_FIX = "unset CINESTREAM_STARTING_OFFSETS (earliest is the default)"


def stop_file(settings: Settings) -> Path:
    """Creating this file asks the processor on the configured checkpoint to stop gracefully."""
    return settings.run_dir / f"processor-{checkpoint_lock_id(settings.checkpoint_dir)}.stop"


def request_stop(settings: Settings) -> Path:
    """Ask the processor on the configured checkpoint to stop after its current batch."""
    path = stop_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(datetime.now(tz=UTC).isoformat())
    return path


@dataclass(frozen=True)
class StartPlan:
    """What the processor resolved before starting: where each partition will be read from."""

    resumed_batch: int | None
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    low_offsets: dict[int, int]
    topic_id: str | None
    starting_offsets: str
    # A batch Spark marks done whose commit to PostgreSQL did not finish (the processor stopped
    # during its background commit): the processor marks it not done and Spark reads it again.
    unfinished_batch: int | None = None

    @property
    def backlog(self) -> int:
        """Records between the start offsets and the current end of the topic."""
        return sum(max(0, self.end_offsets[p] - o) for p, o in self.start_offsets.items())

    @property
    def in_topic(self) -> int:
        """Records in the topic now."""
        return sum(self.end_offsets[p] - self.low_offsets[p] for p in self.end_offsets)

    @property
    def skipped_by_latest(self) -> int:
        """Records a first run at ``latest`` leaves unread: the seed's empty windows."""
        if self.resumed_batch is not None or self.starting_offsets != "latest":
            return 0
        return self.in_topic

    def latest_warning(self, topic: str) -> str:
        """The one sentence about starting at ``latest`` over a backlog, with its fix."""
        return (
            f"no checkpoint and starting offsets 'latest': the processor would skip the "
            f"{self.skipped_by_latest} records already in {topic} (the seed's empty windows); "
            f"{LATEST_FIX}"
        )


def unfinished_commit(done: int | None, stored: StoredCheckpoint) -> bool:
    """True when the checkpoint is one batch ahead of the store because the processor stopped
    while committing that batch in the background (it recorded the hand-off first): that batch
    can be read again. Any other gap (a store emptied or restored) is not recoverable here."""
    if done is None or stored.handed_off_batch != done:
        return False
    stored_last = -1 if stored.last_batch_id is None else stored.last_batch_id
    return done == stored_last + 1


def unfinished_note(batch_id: int) -> str:
    """What the start plan says of a batch whose commit did not finish."""
    return (
        f"batch {batch_id} is marked done in the checkpoint but its commit to PostgreSQL did not "
        "finish (the processor stopped during it): the processor reads it again at start"
    )


def plan_start(settings: Settings, fs: CheckpointFS, stored: StoredCheckpoint) -> StartPlan:
    """Check that the checkpoint matches the topic and the store; raise
    :class:`CheckpointMismatch` if starting would skip or double-count ratings."""
    topic = settings.ratings_topic
    partitions = admin.partition_offsets(settings, topic)
    if not partitions:
        raise CinestreamError(
            f"topic {topic!r} does not exist on {settings.kafka_bootstrap}: create it with "
            "`cinestream topics create`"
        )
    current_id = admin.topic_id(settings, topic)
    low = {p.partition: p.low for p in partitions}
    high = {p.partition: p.high for p in partitions}
    batch, offsets = checkpoint_offsets(fs, settings.checkpoint_dir)

    def plan(
        resumed: int | None, start: dict[int, int], unfinished: int | None = None
    ) -> StartPlan:
        return StartPlan(
            resumed, start, high, low, current_id, settings.starting_offsets, unfinished
        )

    if batch is None:
        if stored.batches:
            raise CheckpointMismatch(
                f"no checkpoint at {settings.checkpoint_dir}, but PostgreSQL holds "
                f"{stored.batches} batches committed from it: starting over would count "
                "those ratings twice",
                RESET_FIX,
            )
        return plan(None, dict(high if settings.starting_offsets == "latest" else low))

    ckpt = offsets.get(topic)
    if ckpt is None:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} belongs to topic(s) {sorted(offsets)}, not "
            f"{topic!r}",
            RESET_FIX,
        )
    problems = []
    if stored.topic_id and current_id and stored.topic_id != current_id:
        problems.append(
            f"topic {topic!r} was deleted and recreated (id {stored.topic_id} -> {current_id})"
        )
    # Every batch is committed to PostgreSQL, or recorded as handed off to the processor's
    # background commit, before Spark marks it done. So a batch Spark calls done that the store
    # lacks is either that one handed-off batch (read again) or lost ratings (store restored,
    # tables emptied).
    done = committed_batch(fs, settings.checkpoint_dir)
    unfinished = done if unfinished_commit(done, stored) else None
    if unfinished is not None:
        # Reading it again starts where the batch before it ended (batch 0: where the query
        # started, which Spark checks itself): still in the topic?
        before: dict[str, dict[int, int]] = {}
        if unfinished > 0:
            _, before = checkpoint_offsets(fs, settings.checkpoint_dir, unfinished - 1)
        for p, offset in sorted(before.get(topic, {}).items()):
            if p in low and offset < low[p]:
                problems.append(
                    f"{unfinished_note(unfinished)}, but partition {p}'s offsets "
                    f"{offset}..{low[p] - 1} were deleted since"
                )
    elif done is not None and (stored.last_batch_id is None or stored.last_batch_id < done):
        problems.append(
            f"the checkpoint has batches up to {done} done but PostgreSQL holds "
            + (
                f"batches only up to {stored.last_batch_id}"
                if stored.last_batch_id is not None
                else "none of them"
            )
            + ", so their ratings are missing from the store"
        )
    # The store may be ahead by the one batch Spark had not marked done when it stopped; more
    # than that and Spark would recompute batches the store holds over other offsets.
    done_or_none = -1 if done is None else done
    if stored.last_batch_id is not None and stored.last_batch_id > done_or_none + 1:
        problems.append(
            f"PostgreSQL holds batches up to {stored.last_batch_id} but the checkpoint has "
            + (f"only up to {done} done" if done is not None else "none done")
            + ": the checkpoint is behind the store (restored from an older copy, writes lost on "
            "its storage, or a second writer)"
        )
    for p, offset in sorted(ckpt.items()):
        if p not in high:
            problems.append(f"partition {p} is in the checkpoint but not in the topic")
        elif offset > high[p]:
            problems.append(
                f"partition {p}: checkpoint at offset {offset} but the topic ends at {high[p]}"
            )
        elif offset < low[p]:
            problems.append(
                f"partition {p}: offsets {offset}..{low[p] - 1} were deleted before they were "
                "processed"
            )
    if problems:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} does not match topic {topic!r}: "
            + "; ".join(problems)
            + ". Starting would skip data",
            RESET_FIX,
        )
    return plan(batch, {p: ckpt.get(p, low[p]) for p in high}, unfinished)
