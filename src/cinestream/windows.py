"""Event-time window types: ``tumbling_<size>`` and ``sliding_<size>_<slide>``."""

from __future__ import annotations

from dataclasses import dataclass

from cinestream.timeparse import parse_duration_ms


class WindowTypeError(ValueError):
    """A window type name that cinestream cannot parse."""


@dataclass(frozen=True)
class WindowSpec:
    """A window type: windows of ``size_ms`` starting every ``slide_ms`` (aligned to epoch)."""

    name: str
    size_ms: int
    slide_ms: int

    @property
    def windows_per_event(self) -> int:
        """How many windows of this type contain each rating."""
        return self.size_ms // self.slide_ms


def _duration(name: str, text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise WindowTypeError(f"{name}: {exc}") from exc


def parse_window_type(name: str) -> WindowSpec:
    """``tumbling_1min`` -> 1-minute windows; ``sliding_5min_1min`` -> 5-minute windows every 1."""
    parts = name.split("_")
    if parts[0] == "tumbling" and len(parts) == 2:
        size = _duration(name, parts[1])
        return WindowSpec(name, size, size)
    if parts[0] == "sliding" and len(parts) == 3:
        size, slide = _duration(name, parts[1]), _duration(name, parts[2])
        if size % slide:
            raise WindowTypeError(f"{name}: the size must be a multiple of the slide")
        return WindowSpec(name, size, slide)
    raise WindowTypeError(
        f"unknown window type {name!r}: use tumbling_<size> or sliding_<size>_<slide>, "
        "e.g. tumbling_1min, sliding_5min_1min"
    )
