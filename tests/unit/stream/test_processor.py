"""The continuous processor's restart budget (pure; no Spark)."""

from __future__ import annotations

from cinestream.stream.processor import RestartBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_back_off_then_spend_the_budget() -> None:
    clock = Clock()
    budget = RestartBudget(3, healthy_s=600, clock=clock)
    backoffs = []
    for _ in range(4):
        clock.now += 10
        backoffs.append(budget.failed())
    assert backoffs == [2.0, 4.0, 8.0, None]


def test_failures_spread_over_weeks_never_end_the_processor() -> None:
    clock = Clock()
    budget = RestartBudget(10, healthy_s=600, clock=clock)
    for _ in range(50):  # one failure a day
        clock.now += 86_400
        assert budget.failed() == 2.0
    assert budget.failures == 1
