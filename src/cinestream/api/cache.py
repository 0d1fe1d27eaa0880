"""Answers computed from the store, kept until the store changes.

Every table the API reads has a statement trigger that sends a notification on
:data:`cinestream.store.schema.CHANGE_CHANNEL` (:func:`cinestream.store.reads.listen_for_changes`);
PostgreSQL delivers it when the writing transaction commits, whoever wrote (stream, backfill,
reset, or an operator's SQL).
One thread LISTENs on its own connection and moves :attr:`StoreCache.generation` on every
notification; an answer computed under an older generation is computed again. So a cached answer
is never older than the last commit the listener has heard of (milliseconds), and between commits
(one per micro-batch, 10 s by default) requests do not touch the database at all.

While the listener is not connected (starting, database down) nothing is cached: every request
reads the database, so an outage shows as a 503 at once rather than as old numbers.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import psycopg

from cinestream.errors import first_line
from cinestream.net import redact_url
from cinestream.store import reads

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreCache:
    """Answers keyed by request, valid while the store's change generation holds."""

    def __init__(self, url: str, *, max_entries: int = 256, check_s: float = 1.0) -> None:
        self.url = url
        self.max_entries = max_entries
        self.check_s = check_s
        self.generation: int | None = None  # None: not listening, so nothing is cached
        self._next_generation = 0
        self._entries: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self._flights: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="store-cache", daemon=True)
        self.hits = 0
        self.misses = 0

    def start(self) -> None:
        """Start listening for store changes (in a daemon thread)."""
        self._thread.start()

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join(timeout=self.check_s + 3)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached answer for ``key``, or ``compute()`` (once per key at a time)."""
        value = self._lookup(key)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:  # the others wait for the first one's answer instead of all computing it
            value = self._lookup(key)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
            generation = self.generation  # read before the data, so a later commit invalidates
            self.misses += 1
            try:
                value = compute()
            except BaseException:  # a failed computation (database down) leaves no lock behind
                with self._lock:
                    self._flights.pop(key, None)
                raise
            with self._lock:
                if generation is not None:
                    self._entries[key] = (generation, value)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
                self._flights.pop(key, None)
            return value

    def _lookup(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self.generation is None or entry[0] != self.generation:
                return _MISSING
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def advance(self, listening: bool = True) -> None:
        """A new generation: the store changed (or the listener lost/regained the database)."""
        with self._lock:
            self._next_generation += 1
            self.generation = self._next_generation if listening else None
            self._entries.clear()

    def _listen(self) -> None:
        where = redact_url(self.url)
        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=2,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=2,
                ) as conn:
                    reads.listen_for_changes(conn)
                    self.advance(listening=True)
                    if lost:
                        log.info("store cache: listening on %s again", where)
                    lost = False
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.check_s):
                            self.advance(listening=True)
                        reads.ping(conn)  # a dead connection raises here
            except psycopg.Error as exc:
                self.advance(listening=False)
                if not lost:
                    log.warning(
                        "store cache: not listening on %s (%s); answers are not cached until "
                        "it is back",
                        where,
                        first_line(exc),
                    )
                lost = True
                self._stop.wait(self.check_s)
        self.advance(listening=False)


_MISSING = object()
