"""Where the processor starts, checked before it starts: the checkpoint against the topic and the
store, and the one rule about ``latest``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from cinestream.errors import (
    CHECKPOINT_FIX,
    DELETED_FIX,
    RECREATED_FIX,
    CheckpointMismatch,
    CinestreamError,
)
from cinestream.kafka import admin
from cinestream.settings import Settings
from cinestream.store.checkpoint_lock import StoredCheckpoint
from cinestream.store.pipeline import binding_problem
from cinestream.stream.checkpoint import CheckpointFS
from cinestream.stream.checkpoint_log import (
    checkpoint_offsets,
    committed_batch,
    initial_offsets,
    query_id,
)

log = logging.getLogger("cinestream.processor")

LATEST_FIX = "unset CINESTREAM_STARTING_OFFSETS (earliest is the default)"


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
    # No checkpoint, but the store holds this topic: start where the store's counts end.
    from_store: bool = False

    def spark_starting_offsets(self, topic: str) -> str:
        """Spark's ``startingOffsets`` for a new checkpoint: the store's offsets as JSON, else
        the configured earliest/latest (a checkpoint, once there, decides by itself)."""
        if not self.from_store:
            return self.starting_offsets
        return json.dumps({topic: {str(p): o for p, o in sorted(self.start_offsets.items())}})

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
        if self.resumed_batch is not None or self.from_store or self.starting_offsets != "latest":
            return 0
        return self.in_topic

    def latest_warning(self, topic: str) -> str:
        """The one sentence about starting at ``latest`` over a backlog, with its fix."""
        return (
            f"no checkpoint and starting offsets 'latest': the processor would skip the "
            f"{self.skipped_by_latest} records already in {topic} (the seed's empty windows); "
            f"{LATEST_FIX}"
        )


def unfinished_note(batch_id: int) -> str:
    """What the start plan says of a batch whose commit did not finish."""
    return (
        f"batch {batch_id} is marked done in the checkpoint but its commit to PostgreSQL did not "
        "finish (the processor stopped during it): the processor reads it again at start"
    )


def _on(store_end: dict[str, int], position: dict[int, int]) -> bool:
    """True when a checkpoint at ``position`` is where the store ends (on the store's
    partitions; a partition the store has never seen may be anywhere)."""
    return all(position.get(int(p)) == o for p, o in store_end.items())


def _disagreement(store_end: dict[str, int], position: dict[int, int], done: int | None) -> str:
    """One sentence on how a checkpoint at ``position`` and the store disagree."""
    if not store_end:
        return (
            f"the checkpoint has batches up to {done} done but PostgreSQL holds none of them, so "
            "their ratings are missing from the store (emptied, or a new database)"
        )
    ahead = [
        f"p{p} {o}..{position[int(p)]}"
        for p, o in sorted(store_end.items())
        if position.get(int(p), o) > o
    ]
    behind = [
        f"p{p} {position.get(int(p))} < {o}"
        for p, o in sorted(store_end.items())
        if position.get(int(p), -1) < o
    ]
    parts = []
    if ahead:
        parts.append(
            f"the checkpoint has read past where PostgreSQL's counts end ({', '.join(ahead)}), "
            "so those ratings are missing from the store (restored from an older backup, or "
            "emptied)"
        )
    if behind:
        parts.append(
            f"the checkpoint is behind the store ({', '.join(behind)}): restored from an older "
            "copy, or another checkpoint has committed since"
        )
    return "; ".join(parts)


def plan_start(settings: Settings, fs: CheckpointFS, stored: StoredCheckpoint) -> StartPlan:
    """Check the checkpoint against the topic and the store; raise :class:`CheckpointMismatch`
    if starting would skip or double-count ratings.

    The store records where its counts end per partition (:mod:`cinestream.store.pipeline`):
    without a checkpoint the processor starts exactly there (a moved or deleted checkpoint
    resumes, nothing is counted twice); with one, the checkpoint must be there too."""
    topic = settings.ratings_topic
    partitions = admin.partition_offsets(settings, topic)
    if not partitions:
        raise CinestreamError(
            f"topic {topic!r} does not exist on {settings.kafka_bootstrap}: create it with "
            "`cinestream topics create`"
        )
    return plan_against(
        settings,
        fs,
        stored,
        TopicState(
            {p.partition: p.low for p in partitions},
            {p.partition: p.high for p in partitions},
            admin.topic_id(settings, topic),
        ),
    )


def preflight(settings: Settings) -> StartPlan | None:
    """The start plan checked before a processor's JVM starts, so that a checkpoint that does not
    match fails in a second, not after Spark's start-up: only for a local checkpoint nobody holds
    (a running processor moves it under us; the processor checks again under its lock). None
    when it was not checked here."""
    from urllib.parse import urlsplit

    from cinestream.store import schema
    from cinestream.store.checkpoint_lock import CheckpointLock, stored_checkpoint
    from cinestream.store.connection import connect
    from cinestream.stream.checkpoint import LocalFS

    if urlsplit(settings.checkpoint_dir).scheme not in ("", "file"):
        return None
    url = settings.resolved_database_url
    if CheckpointLock(url, settings.checkpoint_dir).holder() is not None:
        return None
    with connect(url) as conn:
        schema.ensure_schema(conn)
        stored = stored_checkpoint(conn, settings.checkpoint_dir)
    return plan_start(settings, LocalFS(), stored)


@dataclass(frozen=True)
class TopicState:
    """The ratings topic as it is now: first and end offset per partition, and its id."""

    low: dict[int, int]
    high: dict[int, int]
    topic_id: str | None


def plan_against(
    settings: Settings, fs: CheckpointFS, stored: StoredCheckpoint, topic_state: TopicState
) -> StartPlan:
    """:func:`plan_start` for a topic in ``topic_state`` (no Kafka needed)."""
    topic = settings.ratings_topic
    low, high, current_id = topic_state.low, topic_state.high, topic_state.topic_id
    mismatch = binding_problem(
        stored.binding,
        topic,
        current_id,
        tuple(settings.window_types),
        settings.redacted_database_url(),
    )
    if mismatch is not None:
        raise mismatch
    store_end = stored.binding.end_offsets if stored.binding else {}
    batch, offsets = checkpoint_offsets(fs, settings.checkpoint_dir)

    def plan(
        resumed: int | None,
        start: dict[int, int],
        unfinished: int | None = None,
        from_store: bool = False,
    ) -> StartPlan:
        return StartPlan(
            resumed,
            start,
            high,
            low,
            current_id,
            settings.starting_offsets,
            unfinished,
            from_store,
        )

    if batch is None:
        initial = initial_offsets(fs, settings.checkpoint_dir).get(topic)
        if initial is not None and store_end and not _on(store_end, initial):
            raise CheckpointMismatch(
                f"checkpoint {settings.checkpoint_dir} starts at {initial} but the store's "
                f"counts end at {store_end}",
                CHECKPOINT_FIX,
            )
        if not store_end:
            return plan(None, dict(high if settings.starting_offsets == "latest" else low))
        start = {p: store_end.get(str(p), low[p]) for p in high}
        _check_in_topic(settings, start, low, high, store_end, "the store's counts end")
        return plan(None, start, from_store=True)

    ckpt = offsets.get(topic)
    if ckpt is None:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} belongs to topic(s) {sorted(offsets)}, not "
            f"{topic!r}",
            CHECKPOINT_FIX,
        )
    resume = _resume_position(settings, fs, stored, store_end, low)
    problems = list(resume.problems)
    lost = not store_end and resume.done is not None and resume.unfinished is None
    disagree = lost or not _on(store_end, resume.position)
    if disagree:
        problems.append(_disagreement(store_end, resume.position, resume.done))
    deleted = _offsets_problems(resume.position, ckpt, low, high, problems)
    if problems:
        raise CheckpointMismatch(
            f"checkpoint {settings.checkpoint_dir} does not match topic {topic!r} and the store: "
            + "; ".join(problems)
            + ". Starting would skip or double-count data",
            # Records gone from Kafka are gone whatever the checkpoint says: accept it, or not.
            DELETED_FIX if deleted and not disagree else CHECKPOINT_FIX,
        )
    return plan(batch, {p: ckpt.get(p, low[p]) for p in high}, resume.unfinished)


@dataclass(frozen=True)
class _Resume:
    """Where Spark reads on from a checkpoint, as the store sees it."""

    done: int | None  # the last batch Spark calls done
    position: dict[int, int]  # where the store's counts should end
    unfinished: int | None  # a done batch whose commit did not finish (read again)
    problems: tuple[str, ...] = ()


def _resume_position(
    settings: Settings,
    fs: CheckpointFS,
    stored: StoredCheckpoint,
    store_end: dict[str, int],
    low: dict[int, int],
) -> _Resume:
    """Every batch is committed to PostgreSQL, or recorded as handed off to the processor's
    background commit, before Spark marks it done. So the end of the last batch Spark calls done
    is where the store's counts end, or that one handed-off batch ahead of it (read again), or
    the two disagree (store restored or emptied, checkpoint restored or moved)."""
    topic, location = settings.ratings_topic, settings.checkpoint_dir
    done = committed_batch(fs, location)
    initial = initial_offsets(fs, location).get(topic, {})
    position = initial if done is None else checkpoint_offsets(fs, location, done)[1].get(topic, {})
    problems: list[str] = []
    unfinished = None
    ahead = not store_end or not _on(store_end, position)
    if done is not None and stored.handed_off_batch == done and ahead:
        before = (
            initial if done == 0 else checkpoint_offsets(fs, location, done - 1)[1].get(topic, {})
        )
        if _on(store_end, before) and (store_end or done == 0):
            unfinished, position = done, before
            for p, offset in sorted(before.items()):
                if p in low and offset < low[p]:
                    problems.append(
                        f"{unfinished_note(done)}, but partition {p}'s offsets "
                        f"{offset}..{low[p] - 1} were deleted since"
                    )
    if unfinished is None and store_end and not _on(store_end, position):
        # The reverse: the store committed batch done+1 (its commit runs behind Spark) but the
        # process stopped before Spark wrote it to its commit log. Spark runs that batch again
        # from its offset log, and the store recognises it as already committed.
        following = 0 if done is None else done + 1
        planned = None
        if fs.exists(f"{location.rstrip('/')}/offsets/{following}"):
            planned = checkpoint_offsets(fs, location, following)[1].get(topic)
        if (
            planned is not None
            and _on(store_end, planned)
            and stored.handed_off_batch == following
            and stored.last_batch_id == following
            and stored.last_query_id in (None, query_id(fs, location))
        ):
            position = planned
    return _Resume(done, position, unfinished, tuple(problems))


def _offsets_problems(
    position: dict[int, int],
    ckpt: dict[int, int],
    low: dict[int, int],
    high: dict[int, int],
    problems: list[str],
) -> bool:
    """Append what keeps Spark from reading on from ``position`` (offsets deleted before they
    were processed; a checkpoint beyond the topic); True when offsets were deleted."""
    # Spark reads on from the end of the last batch it calls done (a batch it planned after
    # that runs again from there): those offsets must still be in the topic.
    deleted = False
    for p, offset in sorted(position.items()):
        if p in low and offset < low[p]:
            deleted = True
            problems.append(
                f"partition {p}: offsets {offset}..{low[p] - 1} were deleted (retention) before "
                "they were processed"
            )
    for p, offset in sorted(ckpt.items()):
        if p not in high:
            problems.append(f"partition {p} is in the checkpoint but not in the topic")
        elif offset > high[p]:
            problems.append(
                f"partition {p}: checkpoint at offset {offset} but the topic ends at {high[p]}"
            )
    return deleted


def _check_in_topic(
    settings: Settings,
    start: dict[int, int],
    low: dict[int, int],
    high: dict[int, int],
    store_end: dict[str, int],
    what: str,
) -> None:
    """Starting at the store's offsets must find them in the topic."""
    topic = settings.ratings_topic
    gone = [p for p in store_end if int(p) not in high]
    if gone:
        raise CheckpointMismatch(
            f"{what} at partitions {', '.join(sorted(gone))} of topic {topic!r}, which it does "
            "not have",
            RECREATED_FIX,
        )
    deleted = [
        f"partition {p}: offsets {o}..{low[p] - 1}" for p, o in sorted(start.items()) if o < low[p]
    ]
    if deleted:
        raise CheckpointMismatch(
            f"{what} at {store_end} in topic {topic!r}, but Kafka deleted records after that "
            f"(retention) before they were counted ({'; '.join(deleted)})",
            DELETED_FIX,
        )
    ahead = [f"partition {p}: {o} > {high[p]}" for p, o in sorted(start.items()) if o > high[p]]
    if ahead:
        raise CheckpointMismatch(
            f"{what} past the end of topic {topic!r} ({'; '.join(ahead)})", RECREATED_FIX
        )


def log_plan(
    plan: StartPlan, settings: Settings, trigger: str, interval: str, partitions: int
) -> None:
    """Say in the processor's log where it starts and what it reads and writes."""
    s = settings
    offsets = ", ".join(f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.start_offsets.items()))
    ends = ", ".join(f"{s.ratings_topic}-{p}@{o}" for p, o in sorted(plan.end_offsets.items()))
    if plan.resumed_batch is None and plan.from_store:
        log.info(
            "no checkpoint at %s: the store already holds topic %s up to %s, so the "
            "processor resumes there (topic ends at %s; %d records to process)",
            s.checkpoint_dir,
            s.ratings_topic,
            offsets,
            ends,
            plan.backlog,
        )
    elif plan.resumed_batch is None:
        log.info(
            "no checkpoint at %s: first run, starting from %s: %s (topic ends at %s; "
            "%d records to process)",
            s.checkpoint_dir,
            s.starting_offsets,
            offsets,
            ends,
            plan.backlog,
        )
        if plan.skipped_by_latest:
            log.warning("%s", plan.latest_warning(s.ratings_topic))
    else:
        log.info(
            "resuming from checkpoint %s after batch %d: %s (topic ends at %s; lag %d)",
            s.checkpoint_dir,
            plan.resumed_batch,
            offsets,
            ends,
            plan.backlog,
        )
    log.info(
        "kafka %s, topic %s (id %s) -> metrics %s, dlq %s; database %s; windows %s; "
        "allowed lateness %ss; trigger %s%s; at most %d ratings (%d cells) a batch",
        s.kafka_description,
        s.ratings_topic,
        plan.topic_id,
        s.metrics_topic,
        s.dlq_topic,
        s.redacted_database_url(),
        ",".join(s.window_types),
        s.allowed_lateness_s,
        trigger,
        f" every {interval}" if trigger == "continuous" else "",
        s.spark_max_offsets_per_trigger(partitions),
        s.spark_max_offsets_per_trigger(partitions) * s.cells_per_rating,
    )
