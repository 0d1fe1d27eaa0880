"""The processor's hold on its checkpoint while a query runs: the lock taken at start, then a
watch over the running query for whatever should stop it between batches (a stop file, the
Airflow task that started it gone, the lock lost, a failed commit, the maximum duration)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyspark.errors import StreamingQueryException

from cinestream.errors import ProcessorBusy, ServiceUnavailable
from cinestream.settings import Settings
from cinestream.store.checkpoint_lock import CheckpointLock

log = logging.getLogger("cinestream.processor")

# How often a running processor checks that it still holds its checkpoint's lock.
LOCK_CHECK_S = 5


def acquire_lock(lock: CheckpointLock, settings: Settings, wait_s: float) -> None:
    """Take the checkpoint's lock, waiting up to ``wait_s``; :class:`ProcessorBusy` naming the
    holder and the ways out when another processor keeps it."""
    if not lock.try_acquire():
        holder = lock.holder() or "another session"
        if wait_s > 0:
            log.info(
                "waiting up to %.0fs for the lock on checkpoint %s (held by %s)",
                wait_s,
                settings.checkpoint_dir,
                holder,
            )
        if not lock.acquire(wait_s):
            raise ProcessorBusy(
                f"another processor is running on checkpoint {settings.checkpoint_dir} "
                f"(held by {lock.holder() or holder}); let it finish, stop it with "
                "`cinestream process --stop`, or wait with --wait-for-lock SECONDS"
            )
    log.info(
        "holding the lock on checkpoint %s (fencing token %s)", settings.checkpoint_dir, lock.token
    )


def supervisor_gone(pid: str) -> bool:
    """True when the Airflow task that started this processor (``pid``) has ended (killed after
    a stop from the UI, a lost worker): the processor then stops by itself, between batches."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        log.warning(
            "the Airflow task that started this processor (pid %s) is gone; stopping after "
            "the current batch",
            pid,
        )
        return True
    except PermissionError:
        return False
    return False


def stop_gracefully(query: Any, timeout_s: float = 300) -> None:
    """Let the running batch finish (up to ``timeout_s``), then stop the query."""
    deadline = time.monotonic() + timeout_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
    log.info("query stopped between batches")


class QueryWatch:
    """Waits for a running query and stops it between batches when something asks to.

    :param stop: set by a signal handler or here; a set event stops the query.
    :param commit_failed: True when the batch handed to the background commit has failed.
    :param stop_files: files whose existence asks for a stop (the checkpoint's, the task's own).
    :param supervisor_pid: the Airflow task process that started this processor, if any.
    """

    def __init__(
        self,
        lock: CheckpointLock,
        stop: threading.Event,
        commit_failed: Callable[[], bool],
        stop_files: Sequence[Path],
        *,
        supervisor_pid: str = "",
        max_duration_s: float | None = None,
    ) -> None:
        self.lock = lock
        self.stop = stop
        self.commit_failed = commit_failed
        self.stop_files = list(stop_files)
        self.supervisor_pid = supervisor_pid
        self.max_duration_s = max_duration_s
        # The lock was taken over: the processor must stop and fail with this.
        self.lost_lock: ProcessorBusy | None = None

    def watch(self, query: Any, began: float) -> bool:
        """Wait for the query; on a stop request let the running batch finish, then stop; True
        when it was stopped on purpose. The lock is checked every few seconds too, so an idle
        processor that lost it stops (:attr:`lost_lock`)."""
        checked = time.monotonic()
        while query.isActive:
            if time.monotonic() - checked >= LOCK_CHECK_S:
                checked = time.monotonic()
                if supervisor_gone(self.supervisor_pid):
                    self.stop.set()
                try:
                    self.lock.ensure_held()
                except (ProcessorBusy, ServiceUnavailable) as exc:
                    if isinstance(exc, ProcessorBusy):
                        self.lost_lock = exc
                        log.error("%s", exc)
                        stop_gracefully(query)
                        return True
                    log.warning("cannot check the lock now: %s", exc)
            if self.commit_failed():
                # An idle query would only find out at its next batch: stop it now, so that the
                # restart reads the batch again (continuous) or the run fails (available-now).
                log.error("a batch's commit failed; stopping the query")
                stop_gracefully(query)
                return False
            if self._stop_requested(began):
                stop_gracefully(query)
                for sf in self.stop_files:
                    sf.unlink(missing_ok=True)
                return True
            try:
                query.awaitTermination(1)
            except StreamingQueryException:
                # The query failed: the processor reads query.exception() and decides.
                return False
        return False

    def _stop_requested(self, began: float) -> bool:
        expired = self.max_duration_s is not None and (
            time.monotonic() - began >= self.max_duration_s
        )
        for sf in self.stop_files:
            if sf.exists():
                log.info("stop requested through %s", sf)
                self.stop.set()
        if expired:
            log.info("maximum duration reached; stopping")
        return self.stop.is_set() or expired
