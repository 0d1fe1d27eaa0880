"""Watermarks while a partition's leadership moves (kafka/admin.py): asked again, within a bound.

A topic created a moment ago on three brokers, or a broker just restarted, answers
NOT_LEADER_FOR_PARTITION until the new leader has taken over; ``partition_offsets`` must not call
that an outage. The consumer below only replays answers; the behaviour under a real cluster is
covered by tests/cluster/test_compose_kafka.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from cinestream.kafka import admin


class _Answers:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked = 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, KafkaError):
            raise KafkaException(answer)
        return answer


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin.time, "sleep", lambda s: None)


def _in(seconds: float) -> float:
    return admin.time.monotonic() + seconds


def test_a_moving_leader_is_asked_again_until_it_answers() -> None:
    moving = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)
    consumer = _Answers(moving, KafkaError(KafkaError.LEADER_NOT_AVAILABLE), (3, 17))
    assert admin._watermarks(consumer, TopicPartition("ratings", 0), _in(20)) == (3, 17)
    assert consumer.asked == 3


def test_another_error_is_raised_at_once() -> None:
    consumer = _Answers(KafkaError(KafkaError._TRANSPORT), (0, 1))
    with pytest.raises(KafkaException):
        admin._watermarks(consumer, TopicPartition("ratings", 0), _in(20))
    assert consumer.asked == 1


def test_a_leader_that_never_arrives_is_raised_after_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter(range(100))  # each look at the clock is a second later
    monkeypatch.setattr(admin.time, "monotonic", lambda: float(next(clock)))
    moving = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)
    consumer = _Answers(*[moving] * 10)
    with pytest.raises(KafkaException, match="NOT_LEADER"):
        admin._watermarks(consumer, TopicPartition("ratings", 0), deadline=3.5)
    assert consumer.asked == 5  # the clock after each refusal: 0, 1, 2, 3, then 4 > 3.5
