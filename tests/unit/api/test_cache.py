"""The API's store cache: what is cached, for how long, and computed once under concurrency.

The listener (LISTEN on PostgreSQL) is exercised in tests/integration/test_api.py; here the
generations are advanced by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from cinestream.api.cache import StoreCache


def counting(
    value: object = "answer", delay: float = 0.0
) -> tuple[Callable[[], object], list[int]]:
    calls: list[int] = []

    def compute() -> object:
        calls.append(1)
        time.sleep(delay)
        return value

    return compute, calls


def cache() -> StoreCache:
    return StoreCache("postgresql://unused@127.0.0.1:1/none")  # the listener is never started


def test_nothing_is_cached_while_not_listening() -> None:
    c = cache()
    compute, calls = counting()
    assert c.get("k", compute) == "answer"
    assert c.get("k", compute) == "answer"
    assert len(calls) == 2


def test_an_answer_is_kept_until_the_store_changes() -> None:
    c = cache()
    c.advance()
    compute, calls = counting()
    for _ in range(5):
        assert c.get("k", compute) == "answer"
    assert len(calls) == 1 and c.hits == 4
    c.advance()
    c.get("k", compute)
    assert len(calls) == 2
    c.advance(listening=False)  # the database went away: recompute every time
    c.get("k", compute)
    c.get("k", compute)
    assert len(calls) == 4


def test_a_change_during_the_computation_is_not_hidden() -> None:
    c = cache()
    c.advance()

    def compute() -> str:
        c.advance()  # a commit lands while the answer is being read
        return "old"

    assert c.get("k", compute) == "old"
    assert c.get("k", lambda: "new") == "new"


def test_keys_are_separate_and_bounded() -> None:
    c = StoreCache("postgresql://unused@127.0.0.1:1/none", max_entries=2)
    c.advance()
    for key in ("a", "b", "c"):
        c.get(key, lambda key=key: key)  # type: ignore[misc]
    compute, calls = counting("again")
    assert c.get("a", compute) == "again"  # the oldest was evicted
    assert c.get("c", compute) == "c"
    assert len(calls) == 1


def test_concurrent_misses_compute_once() -> None:
    c = cache()
    c.advance()
    compute, calls = counting(delay=0.3)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(c.get("k", compute))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["answer"] * 8
    assert len(calls) == 1


def test_errors_are_raised_and_not_cached() -> None:
    c = cache()
    c.advance()

    def failing() -> str:
        raise RuntimeError("database is down")

    with pytest.raises(RuntimeError, match="database is down"):
        c.get("k", failing)
    assert not c._flights, "a failed computation leaves no per-key lock behind"
    assert c.get("k", lambda: "fine") == "fine"
