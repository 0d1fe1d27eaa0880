"""Shared dependencies of the API: settings, the store reader (pool + cache), a view of Kafka."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import ConnectionPool

from cinestream.api.cache import StoreCache
from cinestream.errors import ServiceUnavailable, first_line
from cinestream.kafka import admin
from cinestream.settings import Settings

T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    """The app's Settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


class StoreReader:
    """Reads the store through the pool, answering from the cache while the store is unchanged.

    At most ``max_queries`` answers are computed at once, whoever asks: a crowd of requests that
    all miss the cache (or all wait on a lock) queues here, up to ``wait_s`` and then 503,
    instead of taking every pooled connection; the pool's other connections stay free for
    ``/metrics/health``, which would otherwise wait for one and report PostgreSQL down.
    """

    def __init__(
        self, pool: ConnectionPool, cache: StoreCache, *, max_queries: int, wait_s: float = 2.0
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.max_queries = max_queries
        self.wait_s = wait_s
        self._gate = threading.BoundedSemaphore(max_queries)

    def read(self, key: Hashable, query: Callable[[Any], T]) -> T:
        """The answer for ``key``: cached while the store is unchanged, else ``query(conn)``."""
        return self.cache.get(key, lambda: self._run(query))

    def _run(self, query: Callable[[Any], T]) -> T:
        """Run ``query`` on a pooled read-only connection; a database that is down is a 503."""
        if not self._gate.acquire(timeout=self.wait_s):
            raise HTTPException(
                status_code=503,
                detail=f"the API is busy: {self.max_queries} store queries have been running "
                f"for the last {self.wait_s:g} s; retry in a moment",
            )
        try:
            return self._query(query)
        finally:
            self._gate.release()

    def _query(self, query: Callable[[Any], T]) -> T:
        try:
            with self.pool.connection(timeout=2) as conn:
                return query(conn)
        except psycopg.errors.QueryCanceled as exc:
            # The role's statement_timeout (or an operator's pg_cancel_backend) cut the query:
            # the database is up, the request asked for more than it may do right now.
            raise HTTPException(
                status_code=503,
                detail=f"the store's query was cancelled ({first_line(exc)}): ask for a shorter "
                "range or fewer rows, or retry when the store is less busy",
            ) from exc
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise HTTPException(
                status_code=503,
                detail=f"PostgreSQL is unavailable ({type(exc).__name__}); the pipeline's "
                "metrics cannot be read right now",
            ) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise HTTPException(
                status_code=503,
                detail="the metrics tables do not exist yet: run `cinestream up` or "
                "`cinestream process`",
            ) from exc


def get_reader(request: Request) -> StoreReader:
    """The app's StoreReader."""
    return request.app.state.reader  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReaderDep = Annotated[StoreReader, Depends(get_reader)]


class KafkaView:
    """Topic end offsets, refreshed in the background at most every ``ttl_s``.

    Requests never wait on Kafka: they get the last snapshot while one thread refreshes it.
    """

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._refreshing = False
        self._at = 0.0
        self._value: dict[str, Any] = {"up": False, "error": "not checked yet"}
        self._refresh()  # the first answer is a real one

    def _refresh(self) -> None:
        try:
            ratings = admin.partition_offsets(self.settings, self.settings.ratings_topic)
            dlq = admin.partition_offsets(self.settings, self.settings.dlq_topic)
            value: dict[str, Any] = {
                "up": True,
                "ratings_end_offsets": {str(p.partition): p.high for p in ratings},
                "ratings_messages": sum(p.messages for p in ratings),
                "dlq_messages": sum(p.messages for p in dlq),
            }
        except ServiceUnavailable as exc:
            value = {"up": False, "error": str(exc)}
        with self._lock:
            self._value, self._at, self._refreshing = value, time.monotonic(), False

    def snapshot(self) -> dict[str, Any]:
        """The last Kafka snapshot (a refresh starts in the background when it is stale)."""
        with self._lock:
            stale = time.monotonic() - self._at >= self.ttl_s
            if stale and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, daemon=True).start()
            return self._value


def get_kafka(request: Request) -> KafkaView:
    """The app's KafkaView."""
    return request.app.state.kafka  # type: ignore[no-any-return]


KafkaDep = Annotated[KafkaView, Depends(get_kafka)]
