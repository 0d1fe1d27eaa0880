"""Event-time window types: ``tumbling_<size>`` and ``sliding_<size>_<slide>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS_MS = {"ms": 1, "s": 1_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^(\d+)(ms|s|min|h|d)$")


class WindowTypeError(ValueError):
    """A window type name that cinestream cannot parse."""


def parse_duration_ms(text: str) -> int:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise WindowTypeError(
            f"bad duration {text!r}: use a positive number and one of {', '.join(_UNITS_MS)}"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass(frozen=True)
class WindowSpec:
    """A window type: windows of ``size_ms`` starting every ``slide_ms`` (aligned to epoch)."""

    name: str
    size_ms: int
    slide_ms: int

    @property
    def windows_per_event(self) -> int:
        return self.size_ms // self.slide_ms

    def window_starts(self, timestamp_ms: int) -> list[int]:
        """Starts of every window of this type that contains ``timestamp_ms``, oldest first."""
        last = timestamp_ms - timestamp_ms % self.slide_ms
        return [last - k * self.slide_ms for k in range(self.windows_per_event - 1, -1, -1)]


def parse_window_type(name: str) -> WindowSpec:
    """``tumbling_1min`` -> 1-minute windows; ``sliding_5min_1min`` -> 5-minute windows every 1."""
    parts = name.split("_")
    if parts[0] == "tumbling" and len(parts) == 2:
        size = parse_duration_ms(parts[1])
        return WindowSpec(name, size, size)
    if parts[0] == "sliding" and len(parts) == 3:
        size, slide = parse_duration_ms(parts[1]), parse_duration_ms(parts[2])
        if size % slide:
            raise WindowTypeError(f"{name}: the size must be a multiple of the slide")
        return WindowSpec(name, size, slide)
    raise WindowTypeError(
        f"unknown window type {name!r}: use tumbling_<size> or sliding_<size>_<slide>, "
        "e.g. tumbling_1min, sliding_5min_1min"
    )
