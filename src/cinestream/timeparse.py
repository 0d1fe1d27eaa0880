"""Parsing durations (``10s``, ``5min``, ``2h``) and ISO-8601 instants for the CLI and jobs."""

from __future__ import annotations

import re
from datetime import datetime

from cinestream.schemas import parse_time

_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minutes": 60,
    "h": 3600,
    "hours": 3600,
    "d": 86400,
    "days": 86400,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_interval_s(text: str) -> float:
    """``10s`` / ``10 seconds`` / ``5min`` / ``2h`` -> seconds (a bare number is seconds)."""
    match = _DURATION.match(text.lower())
    if not match or (match.group(2) and match.group(2) not in _UNITS):
        raise ValueError(f"bad duration {text!r}: use e.g. 10s, 5min, 2h")
    value = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1)
    if value <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return value


def parse_instant(text: str) -> datetime:
    """ISO-8601 time (``2025-11-10T18:00:00Z``); naive times are UTC."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ValueError(f"bad time {text!r}: use ISO-8601, e.g. 2025-11-10T18:00:00Z") from exc
