"""Durations (``10s``, ``5min``, ``2h``) and ISO-8601 instants: the one grammar for the CLI, the
jobs, the settings and the window type names."""

from __future__ import annotations

import re
from datetime import datetime

from cinestream.schemas import parse_time

_UNITS_MS = {
    "ms": 1,
    "s": 1_000,
    "sec": 1_000,
    "seconds": 1_000,
    "m": 60_000,
    "min": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "days": 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration_ms(text: str) -> int:
    """``10s`` / ``10 seconds`` / ``5min`` / ``2h`` / ``250ms`` -> whole milliseconds (a bare
    number is seconds); raises ``ValueError`` naming the accepted forms."""
    match = _DURATION.match(text.lower())
    if not match or (match.group(2) and match.group(2) not in _UNITS_MS):
        raise ValueError(f"bad duration {text!r}: use e.g. 10s, 5min, 2h")
    value = float(match.group(1)) * _UNITS_MS[match.group(2) or "s"]
    if value <= 0 or value != int(value):
        raise ValueError(f"bad duration {text!r}: must be a positive whole number of milliseconds")
    return int(value)


def parse_interval_s(text: str) -> float:
    """A duration in seconds (see :func:`parse_duration_ms`)."""
    return parse_duration_ms(text) / 1000


def spark_interval(text: str) -> str:
    """A duration as Spark's ``processingTime`` trigger takes it (``10s`` -> ``10000 ms``)."""
    return f"{parse_duration_ms(text)} milliseconds"


def parse_instant(text: str) -> datetime:
    """ISO-8601 time (``2025-11-10T18:00:00Z``); naive times are UTC."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ValueError(f"bad time {text!r}: use ISO-8601, e.g. 2025-11-10T18:00:00Z") from exc
