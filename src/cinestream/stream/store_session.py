"""The processor's connection to the store between batches: one autocommit connection, made
when first needed and dropped when it fails, so the next use connects again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from cinestream.store.connection import connect

T = TypeVar("T")


class StoreSession:
    """One autocommit connection to the store, shared by the commit, publication and pruning
    (they run one at a time, on the background commit thread or before the query starts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Autocommit: a read between batches must not leave a transaction open, or the next
            # batch's transaction would become a savepoint inside it and never commit.
            self._conn = connect(self.url, autocommit=True)
        return self._conn

    def call(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work(connection)``; a lost connection is dropped (and the error raised), so that a
        retry connects again."""
        try:
            return work(self.connection())
        except psycopg.OperationalError:
            self.drop()
            raise

    def drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None
