"""What the store holds of a processor checkpoint, and the lock that allows one processor per
checkpoint."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import psycopg

from cinestream.errors import ProcessorBusy
from cinestream.store.connection import connect, one

PROCESSOR_APPLICATION = "cinestream-processor"


@dataclass(frozen=True)
class StoredCheckpoint:
    """What PostgreSQL holds of a processor checkpoint's batches."""

    topic_id: str | None
    batches: int
    last_batch_id: int | None


def stored_checkpoint(conn: psycopg.Connection[Any], checkpoint: str) -> StoredCheckpoint:
    """The topic id and the committed batches PostgreSQL records for ``checkpoint``."""
    with conn.transaction():
        row = conn.execute(
            "SELECT topic_id FROM processor_state WHERE checkpoint = %s", (checkpoint,)
        ).fetchone()
        batches, last = one(
            conn,
            "SELECT count(*), max(batch_id) FROM processor_batches WHERE checkpoint = %s",
            (checkpoint,),
        )
    return StoredCheckpoint(row[0] if row else None, int(batches), last)


def checkpoint_lock_id(checkpoint: str) -> int:
    """The advisory lock id (and stop-file name) of a checkpoint location."""
    return zlib.crc32(checkpoint.encode()) & 0x7FFFFFFF


class CheckpointLock:
    """A session-level advisory lock held for as long as a processor runs on a checkpoint."""

    def __init__(self, url: str, checkpoint: str) -> None:
        self.url = url
        self.checkpoint = checkpoint
        self.lock_id = checkpoint_lock_id(checkpoint)
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another session holds it."""
        conn = connect(self.url, autocommit=True)
        conn.execute(f"SET application_name = '{PROCESSOR_APPLICATION}'")
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,)).fetchone()
        if got and got[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def holder(self) -> str | None:
        """Describe the session holding the lock (pid, application, since), if any."""
        with connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                """
                SELECT a.pid, a.application_name, a.backend_start, a.client_addr
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted
                """,
                (self.lock_id,),
            ).fetchone()
        if not row:
            return None
        return f"backend pid {row[0]} ({row[1] or 'unknown'}), connected since {row[2]:%H:%M:%S}"

    def ensure_held(self) -> None:
        """Check the lock is still ours; re-take it after a database restart."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                self._conn.close()
        self._conn = None
        if not self.try_acquire():
            raise ProcessorBusy(
                f"lost the lock on checkpoint {self.checkpoint} while PostgreSQL was down and "
                "another processor took it; this one stops"
            )

    def release(self) -> None:
        """Give the lock back (closing its session)."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_id,))
            except psycopg.Error:
                pass
            self._conn.close()
        self._conn = None
