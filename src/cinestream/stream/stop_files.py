"""The one way to ask a running processor to stop between batches: a file under the state dir's
``run/`` that the processor watches (:mod:`cinestream.stream.watch`) and removes once stopped.

The checkpoint's stop file stops whichever processor holds that checkpoint (``cinestream process
--stop``, ``cinestream down``); a task's stop file stops only the processor that one Airflow task
try started (its operator passes it with ``--stop-file``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from cinestream.settings import Settings
from cinestream.store.checkpoint_lock import checkpoint_lock_id


def checkpoint_stop_file(settings: Settings) -> Path:
    """Creating this file asks the processor on the configured checkpoint to stop gracefully."""
    return settings.run_dir / f"processor-{checkpoint_lock_id(settings.checkpoint_dir)}.stop"


def task_stop_file(
    settings: Settings, dag_id: str, task_id: str, run_id: str, try_number: int
) -> Path:
    """The stop file of one Airflow task try's processor."""
    name = f"{dag_id}.{task_id}.{run_id}.{try_number}"
    return settings.run_dir / "airflow" / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".stop")


def request_stop(settings: Settings) -> Path:
    """Ask the processor on the configured checkpoint to stop after its current batch."""
    path = checkpoint_stop_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(datetime.now(tz=UTC).isoformat())
    return path
