"""Shared dependencies of the API: settings, the connection pool, a cached view of Kafka."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg_pool import ConnectionPool

from cinestream import kafka_admin
from cinestream.errors import ServiceUnavailable
from cinestream.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_pool(request: Request) -> ConnectionPool:
    return request.app.state.pool  # type: ignore[no-any-return]


def get_connection(pool: Annotated[ConnectionPool, Depends(get_pool)]) -> Iterator[Any]:
    """A pooled read-only connection; a database that is down is a 503 naming it."""
    try:
        with pool.connection(timeout=2) as conn:
            yield conn
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise HTTPException(
            status_code=503,
            detail=f"PostgreSQL is unavailable ({type(exc).__name__}); the pipeline's metrics "
            "cannot be read right now",
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise HTTPException(
            status_code=503,
            detail="the metrics tables do not exist yet: run `cinestream up` or "
            "`cinestream process`",
        ) from exc


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[Any, Depends(get_connection)]


class KafkaView:
    """Topic end offsets, refreshed at most every ``ttl_s`` so requests never wait on Kafka."""

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self.settings = settings
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: dict[str, Any] = {}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at < self.ttl_s:
                return self._value
            try:
                ratings = kafka_admin.partition_offsets(self.settings, self.settings.ratings_topic)
                dlq = kafka_admin.partition_offsets(self.settings, self.settings.dlq_topic)
                self._value = {
                    "up": True,
                    "ratings_end_offsets": {str(p.partition): p.high for p in ratings},
                    "ratings_messages": sum(p.messages for p in ratings),
                    "dlq_messages": sum(p.messages for p in dlq),
                }
            except ServiceUnavailable as exc:
                self._value = {"up": False, "error": str(exc)}
            self._at = time.monotonic()
            return self._value


def get_kafka(request: Request) -> KafkaView:
    return request.app.state.kafka  # type: ignore[no-any-return]


KafkaDep = Annotated[KafkaView, Depends(get_kafka)]
