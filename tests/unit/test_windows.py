from __future__ import annotations

import pytest

from cinestream.windows import WindowTypeError, parse_window_type

T = 1_762_797_930_000  # 2025-11-10T18:05:30Z


def test_tumbling_window_bounds() -> None:
    spec = parse_window_type("tumbling_1min")
    assert (spec.size_ms, spec.slide_ms) == (60_000, 60_000)
    assert spec.window_starts(T) == [1_762_797_900_000]
    # the start is inclusive, the end exclusive
    assert spec.window_starts(1_762_797_900_000) == [1_762_797_900_000]
    assert spec.window_starts(1_762_797_959_999) == [1_762_797_900_000]


def test_sliding_windows_contain_the_event() -> None:
    spec = parse_window_type("sliding_5min_1min")
    starts = spec.window_starts(T)
    assert len(starts) == 5
    assert all(s <= T < s + spec.size_ms for s in starts)
    assert starts[-1] == 1_762_797_900_000


@pytest.mark.parametrize(
    "name", ["tumbling", "tumbling_0min", "sliding_5min_2min", "hopping_1min", "tumbling_1week"]
)
def test_bad_window_types_say_what_to_use(name: str) -> None:
    with pytest.raises(WindowTypeError):
        parse_window_type(name)
