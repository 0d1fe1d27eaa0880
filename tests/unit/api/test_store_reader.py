"""The API's store reader: a query PostgreSQL cancelled is a clear 503, and no more than
``max_queries`` answers are computed at once (issue 20). No database: the pool is a stub."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from fastapi import HTTPException

from cinestream.api.cache import StoreCache
from cinestream.api.deps import StoreReader
from cinestream.settings import Settings
from tests.unit.api.stubs import client_for


class CancelledConnection:
    """A connection on which PostgreSQL cancels every statement, as statement_timeout does."""

    def execute(self, *_args: Any, **_kwargs: Any) -> Any:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")


class StubPool:
    """Hands out a :class:`CancelledConnection`; counts the connections taken."""

    def __init__(self) -> None:
        self.taken = 0

    @contextmanager
    def connection(self, timeout: float) -> Iterator[CancelledConnection]:
        self.taken += 1
        yield CancelledConnection()


def not_listening_cache() -> StoreCache:
    return StoreCache("postgresql://unused@127.0.0.1:1/none")  # nothing is cached


def cancelled(conn: Any) -> bytes:
    return conn.execute("SELECT pg_sleep(60)")  # type: ignore[no-any-return]


def test_a_cancelled_query_is_a_503_that_says_so() -> None:
    reader = StoreReader(StubPool(), not_listening_cache(), max_queries=1)  # type: ignore[arg-type]
    with pytest.raises(HTTPException) as caught:
        reader.read("k", cancelled)
    assert caught.value.status_code == 503
    detail = str(caught.value.detail)
    assert "cancelled (canceling statement due to statement timeout)" in detail
    assert "shorter range or fewer rows" in detail
    assert "unavailable" not in detail, "PostgreSQL is up: it cut one query"
    assert "\n" not in detail


def test_a_route_whose_query_is_cancelled_answers_503_json() -> None:
    # The routes' own queries, each cancelled at its first statement.
    client = client_for(Settings(), StoreReader(StubPool(), not_listening_cache(), max_queries=1))  # type: ignore[arg-type]
    for path in ("/metrics/windows", "/metrics/top-movies", "/metrics/summary"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        assert "statement timeout" in response.json()["detail"]


def test_no_more_than_max_queries_run_at_once() -> None:
    pool = StubPool()
    reader = StoreReader(pool, not_listening_cache(), max_queries=1, wait_s=0.05)  # type: ignore[arg-type]
    running, release = threading.Event(), threading.Event()

    def slow(_conn: Any) -> str:
        running.set()
        release.wait(10)
        return "slow"

    first = threading.Thread(target=reader.read, args=("slow", slow))
    first.start()
    assert running.wait(10)
    with pytest.raises(HTTPException) as caught:
        reader.read("other", lambda _conn: "other")
    assert caught.value.status_code == 503
    assert "the API is busy: 1 store queries" in str(caught.value.detail)
    assert pool.taken == 1, "the refused request never took a connection"
    release.set()
    first.join(10)
    assert reader.read("other", lambda _conn: "other") == "other"
