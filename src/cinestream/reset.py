"""Starting over, from the command line or an Airflow task: the full reset (topics, checkpoint,
window store) and the checkpoint-only reset (the store's windows kept; the next run resumes
where the store ends).

No process control here: a running processor is asked to stop through its stop file and awaited
through the checkpoint's lock. Processes the local stack started itself (pid files) are stopped
by :mod:`cinestream.local.stack` before it calls these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from cinestream.errors import CinestreamError
from cinestream.kafka import admin
from cinestream.settings import Settings
from cinestream.store import pipeline, schema
from cinestream.store.checkpoint_lock import CheckpointLock
from cinestream.store.connection import connect
from cinestream.stream.checkpoint import delete_checkpoint
from cinestream.stream.stop_files import checkpoint_stop_file, request_stop

log = logging.getLogger("cinestream.reset")


def request_processor_stop(
    settings: Settings,
    timeout_s: float = 120,
    also_running: Callable[[], bool] = lambda: False,
) -> bool:
    """Ask the processor holding the checkpoint to stop between batches and wait until it has
    let go of the lock (and ``also_running`` is False); False when none was running."""
    lock = CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir)
    try:
        running = lock.holder() is not None
    except CinestreamError:
        running = False
    if not running and not also_running():
        return False
    request_stop(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if lock.holder() is None and not also_running():
                break
        except CinestreamError:
            break
        time.sleep(0.5)
    else:
        log.warning("the processor did not stop within %.0fs", timeout_s)
    checkpoint_stop_file(settings).unlink(missing_ok=True)
    return True


def reset_checkpoint(
    settings: Settings, *, accept_deleted: bool = False, stop_processor: bool = True
) -> Iterator[str]:
    """Remove only the checkpoint: the next run resumes from the offsets the store holds, every
    window kept. After the topic was deleted and recreated the store follows the new topic from
    its start; with ``accept_deleted``, records Kafka deleted before they were counted are
    skipped (said per partition)."""
    if stop_processor and request_processor_stop(settings):
        yield "stopped the processor"
    checkpoint = settings.checkpoint_dir
    deleted = delete_checkpoint(checkpoint)
    yield ("deleted checkpoint " if deleted else "no checkpoint at ") + checkpoint
    topic = settings.ratings_topic
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        pipeline.forget_checkpoint(conn, checkpoint)
        binding = pipeline.stored_binding(conn)
        if binding is None:
            yield "the store holds nothing yet: the next run reads the topic from its start"
            return
        if binding.ratings_topic != topic:
            raise CinestreamError(
                f"the store holds the windows of topic {binding.ratings_topic!r}, not {topic!r}: "
                f"set CINESTREAM_RATINGS_TOPIC={binding.ratings_topic} (or use the database of "
                f"{topic!r})"
            )
        current_id = admin.topic_id(settings, topic)
        if current_id is None:
            raise CinestreamError(
                f"cannot read the id of topic {topic!r} on {settings.kafka_bootstrap} (is Kafka "
                "up? `cinestream status`); nothing was changed in the store"
            )
        if pipeline.rebind_to_topic(conn, topic, current_id):
            yield (
                f"topic {topic} was recreated (id {binding.topic_id} -> {current_id}): the store "
                "keeps every window and counts the new topic into them from its start"
            )
            return
        if accept_deleted:
            low = {str(p.partition): p.low for p in admin.partition_offsets(settings, topic)}
            for p, n in sorted(pipeline.skip_deleted(conn, low).items()):
                yield (
                    f"partition {p}: {n} records were deleted by Kafka before they were counted; "
                    f"the next run starts at offset {low[p]}"
                )
        binding = pipeline.stored_binding(conn)
        assert binding is not None
        yield (
            "the store's windows are kept; the next run resumes from "
            + pipeline.format_offsets(topic, binding.end_offsets)
        )


def reset(settings: Settings, *, keep_topics: bool, stop_processor: bool = True) -> Iterator[str]:
    """The full restart (or, with ``keep_topics``, a re-read); yields each step done."""
    if stop_processor and request_processor_stop(settings):
        yield "stopped the processor"
    if not keep_topics:
        deleted = admin.delete_topics(settings)
        yield f"deleted topics: {', '.join(deleted) or 'none'} (waited until gone)"
        created = admin.create_topics(settings)
        yield f"created topics: {', '.join(created)}"
    yield (
        "deleted checkpoint " if delete_checkpoint(settings.checkpoint_dir) else "no checkpoint at "
    ) + settings.checkpoint_dir
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        schema.truncate_all(conn)
    yield "emptied window_metrics and the window store"
