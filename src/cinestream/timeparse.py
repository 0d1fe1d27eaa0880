"""Durations (``10s``, ``5min``, ``2h``) and ISO-8601 instants: the one grammar for the CLI, the
jobs, the settings and the window type names."""

from __future__ import annotations

import math
import re
from datetime import datetime

from cinestream.schemas import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, format_time, parse_time

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
        raise ValueError(f"bad duration {_shown(text)}: use e.g. 10s, 5min, 2h")
    value = float(match.group(1)) * _UNITS_MS[match.group(2) or "s"]
    if not math.isfinite(value):  # 400 digits: int() of it would raise OverflowError
        raise ValueError(f"bad duration {_shown(text)}: too long")
    if value <= 0 or value != int(value):
        raise ValueError(
            f"bad duration {_shown(text)}: must be a positive whole number of milliseconds"
        )
    return int(value)


def parse_interval_s(text: str) -> float:
    """A duration in seconds (see :func:`parse_duration_ms`)."""
    return parse_duration_ms(text) / 1000


def spark_interval(text: str) -> str:
    """A duration as Spark's ``processingTime`` trigger takes it (``10s`` -> ``10000 ms``)."""
    return f"{parse_duration_ms(text)} milliseconds"


class TimeOutOfRangeError(ValueError):
    """A well-formed time outside the range cinestream's event times live in."""


def parse_instant(text: str) -> datetime:
    """ISO-8601 time (``2025-11-10T18:00:00Z``); naive times are UTC. Anything else raises
    ``ValueError``: ``TimeOutOfRangeError`` for a time with no UTC form
    (``0001-01-01T00:00:00+01:00``), and also the control characters that
    ``datetime.fromisoformat`` lets through."""
    if not (text.isascii() and text.isprintable()):
        raise ValueError(f"bad time {_shown(text)}: use ISO-8601, e.g. 2025-11-10T18:00:00Z")
    try:
        return parse_time(text)
    except OverflowError as exc:
        raise TimeOutOfRangeError(f"bad time {_shown(text)}: it has no UTC form") from exc
    except ValueError as exc:
        raise ValueError(
            f"bad time {_shown(text)}: use ISO-8601, e.g. 2025-11-10T18:00:00Z"
        ) from exc


def parse_range_bound(text: str) -> datetime:
    """An ISO-8601 time that bounds a range of event times: within the SPEC's rating timestamps,
    [2000-01-01, 2100-01-01] (both ends allowed, as a range's bounds); ``TimeOutOfRangeError``
    beyond them, ``ValueError`` for anything that is not a time."""
    try:
        value: datetime | None = parse_instant(text)
    except TimeOutOfRangeError:
        value = None
    if value is None or not MIN_TIMESTAMP_MS <= value.timestamp() * 1000 <= MAX_TIMESTAMP_MS:
        raise TimeOutOfRangeError(
            f"{_shown(text)} is outside the event-time range {format_time(MIN_TIMESTAMP_MS)} .. "
            f"{format_time(MAX_TIMESTAMP_MS)}"
        )
    return value


def _shown(text: str, at_most: int = 40) -> str:
    """``text`` quoted for a one-line message, cut after ``at_most`` characters."""
    return repr(text) if len(text) <= at_most else repr(text[:at_most]) + "..."
