"""retry_on_disconnect waits out an unreachable dependency but not a refusal (pure; no database)."""

from __future__ import annotations

import pytest

from cinestream.errors import ServiceUnavailable
from cinestream.kafka.acls import KafkaRefused
from cinestream.store.connection import retry_on_disconnect


def test_an_unreachable_dependency_is_retried_until_it_answers() -> None:
    calls = []

    def action() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServiceUnavailable("PostgreSQL is unavailable")
        return "done"

    assert retry_on_disconnect(action, timeout_s=30, what="t", sleep_s=0) == "done"
    assert len(calls) == 3


def test_a_refusal_is_raised_at_once_not_retried_as_an_outage() -> None:
    calls = []

    def action() -> None:
        calls.append(1)
        raise KafkaRefused("Kafka refused WRITE on topic 'metrics' to principal User:x")

    with pytest.raises(KafkaRefused, match="refused WRITE"):
        retry_on_disconnect(action, timeout_s=30, what="t", sleep_s=0)
    assert len(calls) == 1
