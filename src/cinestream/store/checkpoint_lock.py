"""What the store holds of a processor checkpoint, and the lock that allows one processor per
checkpoint."""

from __future__ import annotations

import logging
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any

import psycopg

from cinestream.errors import ProcessorBusy
from cinestream.store.connection import connect, one
from cinestream.store.pipeline import PipelineBinding, read_binding

log = logging.getLogger(__name__)

PROCESSOR_APPLICATION = "cinestream-processor"


def runner_label() -> str:
    """Who runs this process: the Airflow task (its operator exports ``AIRFLOW_CTX_*``) or the
    host and pid of a process started by hand."""
    from cinestream.settings import airflow_context

    context = airflow_context()
    dag, run = context.get("AIRFLOW_CTX_DAG_ID"), context.get("AIRFLOW_CTX_DAG_RUN_ID")
    if dag and run:
        task = context.get("AIRFLOW_CTX_TASK_ID", "?")
        tries = context.get("AIRFLOW_CTX_TRY_NUMBER", "?")
        return f"Airflow {dag}.{task}, run {run}, try {tries}"
    return f"pid {os.getpid()} on {socket.gethostname()}"


@dataclass(frozen=True)
class StoredCheckpoint:
    """What PostgreSQL holds of a processor checkpoint's batches."""

    topic_id: str | None
    batches: int
    last_batch_id: int | None
    # The last batch a processor handed to its background commit (see CheckpointLock.hand_off).
    handed_off_batch: int | None = None
    # What the store holds, whichever checkpoint committed it (None: nothing yet).
    binding: PipelineBinding | None = None
    # The query id of the checkpoint's last committed batch (its Spark metadata id).
    last_query_id: str | None = None


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
        handed = conn.execute(
            "SELECT handed_off_batch FROM processor_lock WHERE checkpoint = %s", (checkpoint,)
        ).fetchone()
        query = conn.execute(
            "SELECT query_id FROM processor_batches WHERE checkpoint = %s "
            "ORDER BY batch_id DESC LIMIT 1",
            (checkpoint,),
        ).fetchone()
        binding = read_binding(conn)
    return StoredCheckpoint(
        row[0] if row else None,
        int(batches),
        last,
        handed[0] if handed else None,
        binding,
        query[0] if query else None,
    )


def checkpoint_lock_id(checkpoint: str) -> int:
    """The advisory lock id (and stop-file name) of a checkpoint location."""
    return zlib.crc32(checkpoint.encode()) & 0x7FFFFFFF


# The lock's session: the client and the server both probe the connection, so a dropped network
# or a crashed host releases the lock within seconds, not after the OS's two-hour TCP default.
LOCK_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
LOCK_SESSION_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "15000",
    # The lock session is idle between commits by design: never time it out.
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}


class CheckpointLock:
    """One processor per checkpoint: a session advisory lock, and a fencing token bumped on every
    acquisition that each commit checks inside its own transaction."""

    def __init__(self, url: str, checkpoint: str) -> None:
        self.url = url
        self.checkpoint = checkpoint
        self.lock_id = checkpoint_lock_id(checkpoint)
        self.token: int | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(  # type: ignore[call-overload]
                self.url, autocommit=True, connect_timeout=5, **LOCK_KEEPALIVES
            )
        except psycopg.OperationalError:
            return connect(self.url, autocommit=True)  # raises ServiceUnavailable, one line
        conn.execute(f"SET application_name = '{PROCESSOR_APPLICATION}'")
        for name, value in LOCK_SESSION_SETTINGS.items():
            conn.execute(f"SET {name} = {value}")
        return conn

    def try_acquire(self) -> bool:
        """Take the lock if it is free and a new fencing token with it; False when another
        session holds it."""
        return self.acquire(0)

    def acquire(self, wait_s: float) -> bool:
        """Take the lock and a new fencing token with it, waiting up to ``wait_s`` seconds in the
        lock's queue; False when another session still holds it then.

        A queued waiter is granted the lock by PostgreSQL the moment its holder's session ends,
        ahead of any session that only tries: the processor waiting to take over wins against the
        old holder reconnecting."""
        conn = self._connect()
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,)).fetchone()
        if not (got and got[0]) and wait_s > 0:
            conn.execute(f"SET lock_timeout = {max(1, int(wait_s * 1000))}")
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (self.lock_id,))
                got = (True,)
            except psycopg.errors.LockNotAvailable:
                got = None
            conn.execute("SET lock_timeout = 0")
        if not (got and got[0]):
            conn.close()
            return False
        row = conn.execute(
            """
            INSERT INTO processor_lock (checkpoint, token, holder)
            VALUES (%s, 1, %s)
            ON CONFLICT (checkpoint) DO UPDATE
               SET token = processor_lock.token + 1, holder = EXCLUDED.holder,
                   acquired_at = now()
            RETURNING token
            """,
            (self.checkpoint, f"{runner_label()}, backend pid {conn.info.backend_pid}"),
        ).fetchone()
        self.token = int(row[0]) if row else None
        self._conn = conn
        return True

    def holder(self) -> str | None:
        """Describe who holds the lock (the Airflow task or host and pid, backend pid, since),
        if anyone does."""
        with connect(self.url, autocommit=True) as conn:
            recorded = (
                "(SELECT holder FROM processor_lock WHERE checkpoint = %s)"
                if conn.execute("SELECT to_regclass('processor_lock')").fetchone()[0]  # type: ignore[index]
                else "(SELECT NULL::text WHERE %s::text IS NULL)"
            )
            row = conn.execute(
                f"""
                SELECT a.pid, a.application_name, a.backend_start, {recorded}
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.objid = %s AND l.granted
                """,
                (self.checkpoint, self.lock_id),
            ).fetchone()
        if not row:
            return None
        pid, application, since, recorded = row
        if recorded and recorded.endswith(f"backend pid {pid}"):
            return f"{recorded} ({application or 'unknown'}), connected since {since:%H:%M:%S}"
        return f"backend pid {pid} ({application or 'unknown'}), connected since {since:%H:%M:%S}"

    def session_pid(self) -> int | None:
        """The backend pid of this lock's own session, while it is open."""
        return None if self._conn is None or self._conn.closed else self._conn.info.backend_pid

    def ensure_held(self) -> None:
        """Check the lock's session is alive; after a database restart take the lock again (with
        a new token). Raise :class:`ProcessorBusy` when another processor holds it now."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                self._conn.close()
        self._conn = None
        if not self.try_acquire():
            raise ProcessorBusy(
                f"lost the lock on checkpoint {self.checkpoint} (its database session ended) and "
                f"another processor holds it now ({self.holder() or 'unknown'}); this one stops "
                "without committing"
            )
        log.warning(
            "the lock's database session on checkpoint %s ended; took the lock again (fencing "
            "token %s)",
            self.checkpoint,
            self.token,
        )

    def hand_off(self, batch_id: int) -> None:
        """Record that ``batch_id`` goes to the background commit, before Spark marks it done:
        if the processor stops before PostgreSQL has it, the next start reads it again. Raise
        :class:`ProcessorBusy` when another processor took the lock (its token is newer)."""
        self.ensure_held()  # may take the lock again, with a new token
        assert self._conn is not None
        row = self._conn.execute(
            "UPDATE processor_lock SET handed_off_batch = %s WHERE checkpoint = %s AND token = %s "
            "RETURNING 1",
            (batch_id, self.checkpoint, self.token),
        ).fetchone()
        if row is None:
            raise ProcessorBusy(
                f"lost the lock on checkpoint {self.checkpoint}: fencing token {self.token} is "
                "no longer current; this processor stops without committing"
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
