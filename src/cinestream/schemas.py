"""The three record formats of cinestream, defined once (SPEC: rating event, DLQ record, metric).

Imported by the generator, the Spark jobs, the store, the API, the expectation suites and tests.
Spark types are built lazily so that importing this module never needs pyspark.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

# --- rating event (topic `ratings`) ------------------------------------------------------------
MIN_ID = 1
# Half stars 0.5 .. 5.0, stored internally as the integer number of half stars 1 .. 10.
HALF_STARS = tuple(range(1, 11))
RATING_VALUES = tuple(h / 2 for h in HALF_STARS)
MIN_TIMESTAMP_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_TIMESTAMP_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)  # exclusive


def rating_event_schema() -> StructType:
    """Spark schema of a rating event; ints as longs so that overflow is a validation error."""
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    return StructType(
        [
            StructField("user_id", LongType()),
            StructField("movie_id", LongType()),
            StructField("rating", DoubleType()),
            StructField("timestamp", LongType()),
        ]
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def valid_event_time(value: bytes | None) -> int | None:
    """The event time of a record of ``ratings`` that is valid by the SPEC's rule, else None.

    The same rule as the Spark parser, written independently in plain Python (strict UTF-8,
    strict JSON, one object) for the quality checks that recount what the stream decided.
    """
    if value is None:
        return None
    try:
        body = json.loads(value.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    ids = [body.get("user_id"), body.get("movie_id")]
    rating, ts = body.get("rating"), body.get("timestamp")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= MIN_ID for i in ids):
        return None
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        return None
    if rating not in RATING_VALUES:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int):
        return None
    return ts if MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS else None


# --- invalid event (topic `ratings_dlq`) -------------------------------------------------------
# Every field is always present (null where it does not apply: a tombstone has no raw value).
# ``raw`` is the value, UTF-8 text or base64 (``raw_encoding``): whole when it has at most
# DLQ_RAW_PREFIX_BYTES bytes, else its first bytes only; ``raw_length`` (bytes) and ``raw_sha256``
# (hex) describe the whole value, so a cut one is still identified (and its offset finds it).
DLQ_FIELDS = (
    "error",
    "raw",
    "raw_encoding",
    "raw_length",
    "raw_sha256",
    "source_topic",
    "source_partition",
    "source_offset",
    "source_timestamp",
)
# The most bytes of the original value a DLQ record keeps. A rating is ~80 bytes, so this shows
# the start of anything sent to `ratings` by mistake hundreds of times over, and every value up to
# it (what used to travel whole) still does. A UTF-8 value is cut where a character starts, so
# ``raw`` stays text of at most this many bytes; any other value: base64 of its first this many.
DLQ_RAW_PREFIX_BYTES = 64 * 1024
# The longest DLQ value: the prefix as JSON escapes it at worst (a control character is written
# \u00XX, six bytes for one; base64 is only 4/3) plus the other fields (a reason quotes at most
# 100 characters of the value, a topic name has at most 249) with room to spare. 388 KiB.
DLQ_VALUE_MAX_BYTES = 6 * DLQ_RAW_PREFIX_BYTES + 4 * 1024
# What `ratings` accepts, set on it when cinestream creates it (Kafka's default max.message.bytes,
# 1 MiB + 12), so the DLQ's size below does not depend on how the broker is configured.
RATINGS_MAX_MESSAGE_BYTES = 1_048_588
# A DLQ record is the original key (at most what `ratings` accepts) and a value of at most
# DLQ_VALUE_MAX_BYTES: the DLQ topic (max.message.bytes) and the producers that write it accept
# this, which leaves 64 KiB for the record's framing and lz4's worst-case growth (0.4%).
DLQ_MAX_MESSAGE_BYTES = RATINGS_MAX_MESSAGE_BYTES + DLQ_VALUE_MAX_BYTES + 64 * 1024

# --- window metric (topic `metrics`, table `window_metrics`) -----------------------------------
METRIC_FIELDS = (
    "window_start",
    "window_end",
    "window_type",
    "count",
    "avg_rating",
    "p50_rating",
    "p95_rating",
    "top_movies",
    "processing_time",
)
TOP_MOVIES_LIMIT = 10

# --- window cells: the counts hand-off from the Spark jobs to the store -----------------------
# One row per (window, movie, half star) with its count ``n``, of which ``future`` were stamped
# beyond the future tolerance: what a micro-batch or a backfill adds to (or replaces in) the
# window store. Times are epoch milliseconds, like every window start inside the pipeline.
CELL_FIELDS = (
    "window_type",
    "window_start_ms",
    "window_end_ms",
    "movie_id",
    "half_stars",
    "n",
    "future",
)


def format_time(value: datetime | int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` (the SPEC's time format)."""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; naive times are taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def metric_key(window_type: str, window_start: datetime | int) -> str:
    """Kafka key of a metric record: ``<window_type>|<window_start>``."""
    return f"{window_type}|{format_time(window_start)}"


def metric_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``window_metrics`` as the SPEC's JSON record (exactly its fields, in order)."""
    return {
        "window_start": format_time(row["window_start"]),
        "window_end": format_time(row["window_end"]),
        "window_type": row["window_type"],
        "count": int(row["count"]),
        "avg_rating": float(row["avg_rating"]),
        "p50_rating": float(row["p50_rating"]),
        "p95_rating": float(row["p95_rating"]),
        "top_movies": row["top_movies"],
        "processing_time": format_time(row["processing_time"]),
    }
