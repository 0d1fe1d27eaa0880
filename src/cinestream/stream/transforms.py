"""Pure ``DataFrame -> DataFrame`` transforms of the ratings stream (no I/O here).

The stream processor and the backfill both build their output from :func:`window_cells`, so a
window's numbers have one definition whichever driver computed them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from cinestream.schemas import (
    DLQ_FIELDS,
    DLQ_RAW_PREFIX_BYTES,
    MAX_TIMESTAMP_MS,
    MIN_ID,
    MIN_TIMESTAMP_MS,
    rating_event_schema,
)
from cinestream.windows import WindowSpec

_RANGE = "in [2000-01-01, 2100-01-01)"
# The columns ``window_cells(with_dlq=True)`` adds: an invalid record's DLQ message and origin.
DLQ_CELL_COLUMNS = ["dlq_key", "dlq_value", "dlq_source_partition", "dlq_source_offset"]


def _field_error(parsed: Column, raw_text: Column, name: str, kind: str) -> Column:
    """Why a field that did not parse as ``kind`` is invalid: missing/null, or the wrong type."""
    raw_value = F.get_json_object(raw_text, f"$.{name}")
    return F.when(raw_value.isNull(), F.lit(f"{name} is missing or null")).otherwise(
        F.concat(F.lit(f"{name} must be {kind}, got "), F.substring(raw_value, 1, 100))
    )


_WS = r"[ \t\n\r]*"
_CORRUPT = "_corrupt_record"
# JSON as RFC 8259 writes it: none of the lenient forms Spark's reader accepts by default
# (single quotes and NaN/Infinity are on by default); a record the reader rejects fills _CORRUPT.
_STRICT_JSON = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": _CORRUPT,
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
    "allowUnquotedFieldNames": "false",
    "allowComments": "false",
    "allowUnquotedControlChars": "false",
    "allowBackslashEscapingAnyCharacter": "false",
    "allowNumericLeadingZeros": "false",
}
# A string literal without raw control characters (U+0000..U+001F, which JSON wants escaped).
_CLEAN_STRING = r'"(?:[^"\\\x00-\x1f]++|\\.)*+"'


def _single_json_object(raw: Column) -> Column:
    """True when ``raw``, known to start with a JSON object, has nothing after it but whitespace.

    Spark's JSON functions read the first value and ignore the rest (``{...} {...}`` parses as the
    first object), while the SPEC calls anything but one object invalid. The usual flat record (no
    braces inside) is settled by one regex; a record with braces inside is checked by the nesting
    of its braces and brackets once its string literals are blanked out: the first object must
    close at its last non-blank character.
    """
    flat = raw.rlike(rf"\A{_WS}\{{[^{{}}]*\}}{_WS}\z")
    ends_with_brace = raw.rlike(rf"\}}{_WS}\z")
    no_strings = F.regexp_replace(raw, r'"(?:[^"\\]++|\\.)*+"', '""')
    skeleton = F.regexp_replace(no_strings, r"[^{}\[\]]", "")
    closed_before_the_end = F.aggregate(
        F.split(skeleton, ""),
        F.struct(F.lit(0).alias("depth"), F.lit(False).alias("closed"), F.lit(0).alias("i")),
        lambda acc, c: F.struct(
            (acc["depth"] + F.when(c.isin("{", "["), 1).otherwise(-1)).alias("depth"),
            (acc["closed"] | ((acc["depth"] == 0) & (acc["i"] > 0))).alias("closed"),
            (acc["i"] + 1).alias("i"),
        ),
    )["closed"]
    return F.when(flat, F.lit(True)).otherwise(ends_with_brace & ~closed_before_the_end)


def parse_ratings(kafka_df: DataFrame) -> DataFrame:
    """Parse Kafka records into rating columns plus ``error`` (NULL when the record is valid).

    Output columns: key, value, partition, offset, kafka_timestamp, user_id, movie_id,
    half_stars (1..10), event_ms, error.
    """
    text = F.col("value").cast("string")
    schema = rating_event_schema().add(_CORRUPT, "string")
    parsed = F.from_json(text, schema, _STRICT_JSON)
    df = kafka_df.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.col("timestamp").alias("kafka_timestamp"),
        text.alias("_text"),
        parsed.alias("_r"),
    )
    r = F.col("_r")
    user_id, movie_id = r["user_id"], r["movie_id"]
    rating, ts = r["rating"], r["timestamp"]
    half = rating * 2
    valid = (
        (user_id >= MIN_ID)
        & (movie_id >= MIN_ID)
        & (half == F.floor(half))
        & (rating >= 0.5)
        & (rating <= 5.0)
        & (ts >= MIN_TIMESTAMP_MS)
        & (ts < MAX_TIMESTAMP_MS)
    )
    raw = F.col("_text")
    single_object = _single_json_object(raw)
    # The typed parse marks a record corrupt for a syntax error and for a mistyped field alike;
    # a second parse without typed fields (only of those records) tells the two apart.
    parsed_whole = r[_CORRUPT].isNull()
    syntax_only = F.from_json(raw, StructType([StructField(_CORRUPT, StringType())]), _STRICT_JSON)
    not_json = ~parsed_whole & syntax_only[_CORRUPT].isNotNull()
    utf8 = F.is_valid_utf8(raw)
    valid = valid & single_object & parsed_whole & utf8
    error = _reason(r, raw, valid, single_object, not_json)
    return df.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "kafka_timestamp",
        F.when(valid, user_id).alias("user_id"),
        F.when(valid, movie_id).alias("movie_id"),
        F.when(valid, half.cast("short")).alias("half_stars"),
        F.when(valid, ts).alias("event_ms"),
        error.alias("error"),
    )


def _reason(
    r: Column, raw: Column, valid: Column, single_object: Column, not_json: Column
) -> Column:
    """Why a record is invalid (NULL when ``valid``): the first rule it breaks, in the SPEC's
    order. Branches are tried in order; the first (valid) one is the only one most records
    reach."""
    user_id, movie_id = r["user_id"], r["movie_id"]
    rating, ts = r["rating"], r["timestamp"]
    half = rating * 2
    return (
        F.when(valid, F.lit(None).cast("string"))
        .when(F.col("value").isNull(), F.lit("value is null (a tombstone), not a rating"))
        .when(~F.is_valid_utf8(raw), F.lit("value is not valid UTF-8"))
        .when(F.json_object_keys(raw).isNull(), F.lit("value is not a valid JSON object"))
        .when(~single_object, F.lit("value has characters after the JSON object"))
        .when(
            # With the clean strings removed a quote is left: a string holds a control character.
            not_json & F.regexp_replace(raw, _CLEAN_STRING, "").contains('"'),
            F.lit("value is not valid JSON: a control character inside a string must be escaped"),
        )
        .when(
            not_json,
            F.lit(
                "value is not valid JSON (single quotes, unquoted names, comments, NaN/Infinity "
                "and leading zeros are not JSON)"
            ),
        )
        .when(user_id.isNull(), _field_error(r, raw, "user_id", "an integer"))
        .when(user_id < MIN_ID, F.concat(F.lit("user_id must be >= 1, got "), user_id))
        .when(movie_id.isNull(), _field_error(r, raw, "movie_id", "an integer"))
        .when(movie_id < MIN_ID, F.concat(F.lit("movie_id must be >= 1, got "), movie_id))
        .when(rating.isNull(), _field_error(r, raw, "rating", "a number"))
        .when(
            (half != F.floor(half)) | (rating < 0.5) | (rating > 5.0) | F.isnan(rating),
            F.concat(F.lit("rating must be one of 0.5, 1.0, ..., 5.0, got "), rating),
        )
        .when(ts.isNull(), _field_error(r, raw, "timestamp", "an integer (epoch milliseconds)"))
        .otherwise(F.concat(F.lit(f"timestamp must be epoch milliseconds {_RANGE}, got "), ts))
    )


def _utf8_prefix_length(value: Column, limit: int) -> Column:
    """Bytes in the longest prefix of at most ``limit`` bytes of ``value`` (valid UTF-8, longer
    than ``limit``) that ends where a character ends: where the next byte starts a character.

    A character is at most four bytes, so one of the next byte and the three before it does:
    a continuation byte (``10xxxxxx``, hex 80-BF) never starts one.
    """

    def starts_a_character(position: int) -> Column:
        return ~F.hex(F.substring(value, position, 1)).rlike("^[89AB]")

    return (
        F.when(starts_a_character(limit + 1), F.lit(limit))
        .when(starts_a_character(limit), F.lit(limit - 1))
        .when(starts_a_character(limit - 1), F.lit(limit - 2))
        .otherwise(F.lit(limit - 3))
    )


def _dlq_value() -> Column:
    """The DLQ message of an invalid record (JSON with ``DLQ_FIELDS``): its reason, its raw value
    (at most ``DLQ_RAW_PREFIX_BYTES`` of it) with the whole value's length and SHA-256, and its
    origin. At most ``DLQ_VALUE_MAX_BYTES`` long, whatever the record's size."""
    value = F.col("value")
    length = F.length(value)  # bytes: value is binary
    utf8 = F.is_valid_utf8(value.cast("string"))
    limit = DLQ_RAW_PREFIX_BYTES
    kept = (
        F.when(length <= F.lit(limit), length)
        .when(utf8, _utf8_prefix_length(value, limit))
        .otherwise(F.lit(limit))
    )
    prefix = value.substr(F.lit(1), kept)
    # Spark 4 writes base64 in MIME lines of 76 characters (spark.sql.chunkBase64String.enabled);
    # the DLQ's is one plain line, whatever the session's setting.
    base64 = F.translate(F.base64(prefix), "\r\n", "")
    fields = {
        "error": F.col("error"),
        "raw": F.when(utf8, prefix.cast("string")).otherwise(base64),
        "raw_encoding": F.when(value.isNull(), F.lit("none"))
        .when(utf8, F.lit("utf-8"))
        .otherwise(F.lit("base64")),
        "raw_length": length,
        "raw_sha256": F.sha2(value, 256),
        "source_topic": F.col("topic"),
        "source_partition": F.col("partition"),
        "source_offset": F.col("offset"),
        "source_timestamp": F.date_format(F.col("kafka_timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"),
    }
    body = F.struct(*[fields[name].alias(name) for name in DLQ_FIELDS])
    return F.to_json(body, {"ignoreNullFields": "false"})


def dlq_records(parsed: DataFrame) -> DataFrame:
    """Invalid records as DLQ messages (``key``, ``value`` JSON) for Spark's Kafka sink."""
    return parsed.where(F.col("error").isNotNull()).select("key", _dlq_value().alias("value"))


def _windows_of(spec: WindowSpec, event_ms: Column) -> Column:
    """Array of (window_type, window_start_ms, window_end_ms) for every window of ``spec``."""
    last = event_ms - F.pmod(event_ms, F.lit(spec.slide_ms))
    first = last - F.lit((spec.windows_per_event - 1) * spec.slide_ms)
    starts = F.sequence(first, last, F.lit(spec.slide_ms))
    return F.transform(
        starts,
        lambda s: F.struct(
            F.lit(spec.name).alias("window_type"),
            s.alias("window_start_ms"),
            (s + F.lit(spec.size_ms)).alias("window_end_ms"),
        ),
    )


def assign_windows(events: DataFrame, specs: Sequence[WindowSpec]) -> DataFrame:
    """One row per (rating, window containing it) with window_type/start/end in epoch ms.

    Rows with an ``error`` keep one row with NULL window columns, so that one aggregation pass
    also counts the invalid records.
    """
    ok = F.col("error").isNull()
    if len(specs) == 1 and specs[0].windows_per_event == 1:
        # The common case needs no explode: one tumbling window per rating.
        spec = specs[0]
        start = F.col("event_ms") - F.pmod(F.col("event_ms"), F.lit(spec.size_ms))
        return events.select(
            "*",
            F.when(ok, F.lit(spec.name)).alias("window_type"),
            F.when(ok, start).alias("window_start_ms"),
            F.when(ok, start + F.lit(spec.size_ms)).alias("window_end_ms"),
        )
    none = F.array(
        F.struct(
            F.lit(None).cast("string").alias("window_type"),
            F.lit(None).cast("long").alias("window_start_ms"),
            F.lit(None).cast("long").alias("window_end_ms"),
        )
    )
    windows = F.when(ok, F.concat(*[_windows_of(spec, F.col("event_ms")) for spec in specs]))
    return events.select("*", F.explode(windows.otherwise(none)).alias("_w")).select(
        *events.columns, "_w.window_type", "_w.window_start_ms", "_w.window_end_ms"
    )


def window_cells(
    parsed: DataFrame,
    specs: Sequence[WindowSpec],
    watermark_limit_ms: int,
    *,
    with_dlq: bool = False,
) -> DataFrame:
    """Exact per-window aggregates: one row per (window, movie, half star) with its count ``n``.

    Ratings stamped after ``watermark_limit_ms`` (the wall clock plus the future tolerance) are
    anomalies: counted in ``n`` and in ``future``, left out of ``max_event_ms`` (the newest event
    time that may move the watermark). Invalid records, if any, form one row whose window
    columns are NULL and whose ``n`` is their number.

    With ``with_dlq`` four more columns, ``dlq_key`` and ``dlq_value`` (its DLQ message) and
    ``dlq_source_partition`` and ``dlq_source_offset`` (where it is in the ratings topic: the
    store's outbox is keyed by them), carry each invalid record in the same pass (one row per
    record, ``n`` 1), so that a batch with a bad record is not read from Kafka a second time.
    A message is at most
    ``DLQ_VALUE_MAX_BYTES`` plus its key, so every one can come along; a batch whose messages
    together pass ``spark.driver.maxResultSize`` is the caller's to count again without them and
    to write with :func:`dlq_records`.
    """
    columns: list[str | Column] = ["movie_id", "half_stars", "event_ms", "error"]
    keys = ["window_type", "window_start_ms", "window_end_ms", "movie_id", "half_stars"]
    if with_dlq:
        invalid = F.col("error").isNotNull()
        columns += [
            F.when(invalid, F.col("key")).alias("dlq_key"),
            F.when(invalid, _dlq_value()).alias("dlq_value"),
            F.when(invalid, F.col("partition")).alias("dlq_source_partition"),
            F.when(invalid, F.col("offset")).alias("dlq_source_offset"),
        ]
        keys += DLQ_CELL_COLUMNS
    events = parsed.select(*columns)
    windowed = assign_windows(events, specs)
    return windowed.groupBy(*keys).agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(F.col("event_ms") > F.lit(watermark_limit_ms), 1)).alias("future"),
        F.max(F.when(F.col("event_ms") <= F.lit(watermark_limit_ms), F.col("event_ms"))).alias(
            "max_event_ms"
        ),
    )


def events_in_range(parsed: DataFrame, start_ms: int, end_ms: int) -> DataFrame:
    """Valid ratings with ``start_ms <= event_ms < end_ms`` (the backfill's selection)."""
    return parsed.where(
        F.col("error").isNull()
        & (F.col("event_ms") >= F.lit(start_ms))
        & (F.col("event_ms") < F.lit(end_ms))
    )
