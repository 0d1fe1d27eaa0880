"""The stream's transforms on tiny DataFrames with explicit event times."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from cinestream.schemas import DLQ_FIELDS, DLQ_RAW_PREFIX_BYTES, DLQ_VALUE_MAX_BYTES
from cinestream.stream.transforms import dlq_records, events_in_range, parse_ratings, window_cells
from cinestream.windows import parse_window_type

T0 = 1_762_797_900_000  # 2025-11-10T18:05:00Z
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
)
TUMBLING = [parse_window_type("tumbling_1min")]


def rating(user: Any = 1, movie: Any = 2, value: Any = 4.5, ts: Any = T0, **extra: Any) -> bytes:
    body = {"user_id": user, "movie_id": movie, "rating": value, "timestamp": ts, **extra}
    return json.dumps(body).encode()


def kafka_df(spark: Any, values: list[bytes | None]) -> Any:
    now = datetime(2025, 11, 10, 18, 6, tzinfo=UTC)
    rows = [(b"1", v, "ratings", 0, i, now) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


INVALID = [
    (b"not json", "value is not a valid JSON object"),
    (b"[1, 2, 3]", "value is not a valid JSON object"),
    (b"\xff\xfe\x00\x01", "value is not valid UTF-8"),
    (None, "value is null (a tombstone), not a rating"),
    (rating(user="7"), "user_id must be an integer, got 7"),
    (rating(user=0), "user_id must be >= 1, got 0"),
    (
        json.dumps({"movie_id": 2, "rating": 4.5, "timestamp": T0}).encode(),
        "user_id is missing or null",
    ),
    (rating(movie=-3), "movie_id must be >= 1, got -3"),
    (rating(movie=2.5), "movie_id must be an integer, got 2.5"),
    (rating(value=4.3), "rating must be one of 0.5, 1.0, ..., 5.0, got 4.3"),
    (rating(value=0.0), "rating must be one of 0.5, 1.0, ..., 5.0, got 0.0"),
    (rating(value=5.5), "rating must be one of 0.5, 1.0, ..., 5.0, got 5.5"),
    (rating(value="4.5"), "rating must be a number, got 4.5"),
    (
        rating(ts=1_762_797_900),
        "timestamp must be epoch milliseconds in [2000-01-01, 2100-01-01), got 1762797900",
    ),
    (rating(ts=4_102_444_800_000), "timestamp must be epoch milliseconds"),
    (rating(ts="2025-11-10T18:05:00Z"), "timestamp must be an integer (epoch milliseconds)"),
    (rating() + b" trailing", "value has characters after the JSON object"),
    (rating() + b"\n}", "value has characters after the JSON object"),
    (rating() + b' {"user_id": 1}', "value has characters after the JSON object"),
    (rating(meta={"a": [1, {"b": 2}]}) + b"}", "value has characters after the JSON object"),
    (rating(note="}{") + b' "}"', "value has characters after the JSON object"),
    # JSON that only a lenient parser accepts (Spark's reader allows the first two by default).
    (
        b"{'user_id':1,'movie_id':2,'rating':4.5,'timestamp':%d}" % T0,
        "value is not valid JSON (single quotes",
    ),
    (rating()[:-1] + b', "score": NaN}', "value is not"),
    (rating(note="a\x01b").replace(b"\\u0001", b"\x01"), "value is not valid JSON: a control"),
    (rating(note="a\tb").replace(b"\\t", b"\t"), "value is not valid JSON: a control character"),
    # Invalid UTF-8 anywhere in the value, also inside a field nobody reads.
    (rating(note="ab").replace(b"ab", b"a\xffb"), "value is not valid UTF-8"),
]


def test_valid_records_parse_with_extra_fields_ignored(spark: Any) -> None:
    values = [
        rating(),
        rating(value=1, extra="x"),
        rating(ts=946_684_800_000),
        rating(ts=4_102_444_799_999),
        rating(value=0.5) + b"\n",
        rating(value=3) + b" \r\n\t ",
        rating(meta={"tags": ["a", {"b": "}"}]}, note='say "{hi}"') + b"\n",
        # Escaped control characters and pretty printing are plain JSON.
        rating(note="tab\there\u0001") + b"\n",
        b'{\n  "user_id": 1,\n  "movie_id": 2,\n  "rating": 4.5,\n  "timestamp": %d\n}\n' % T0,
    ]
    parsed = parse_ratings(kafka_df(spark, values))
    rows = parsed.select("user_id", "movie_id", "half_stars", "event_ms", "error").collect()
    assert [r.error for r in rows] == [None] * 9
    assert [r.half_stars for r in rows] == [9, 2, 9, 9, 1, 6, 9, 9, 9]
    assert rows[2].event_ms == 946_684_800_000


@pytest.mark.parametrize(("value", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_each_kind_of_invalid_record_has_a_reason(
    spark: Any, value: bytes | None, reason: str
) -> None:
    parsed = parse_ratings(kafka_df(spark, [value]))
    (row,) = parsed.select("error").collect()
    assert row.error is not None and row.error.startswith(reason)


def test_dlq_record_keeps_the_raw_value_and_its_origin(spark: Any) -> None:
    parsed = parse_ratings(kafka_df(spark, [rating(), b"oops", b"\xff\x00"]))
    records = [json.loads(r.value) for r in dlq_records(parsed).collect()]
    assert [r["source_offset"] for r in records] == [1, 2]
    first, second = records
    assert first["raw"] == "oops" and first["raw_encoding"] == "utf-8"
    assert first["error"] == "value is not a valid JSON object"
    assert second["raw"] == "/wA=" and second["raw_encoding"] == "base64"
    assert {"error", "raw", "source_topic", "source_partition", "source_offset"} <= set(first)
    assert first["source_topic"] == "ratings" and first["source_partition"] == 0


def expected_dlq(value: bytes | None, offset: int, error: str) -> dict[str, Any]:
    """The DLQ record of an invalid value, written differently from the Spark builder: a cut
    UTF-8 prefix is decoded ignoring what it cut (only its last character can be incomplete)."""
    if value is None:
        raw, encoding, length, sha256 = None, "none", None, None
    else:
        prefix = value[:DLQ_RAW_PREFIX_BYTES]
        try:
            value.decode("utf-8")
            raw, encoding = prefix.decode("utf-8", errors="ignore"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(prefix).decode(), "base64"
        length, sha256 = len(value), hashlib.sha256(value).hexdigest()
    return {
        "error": error,
        "raw": raw,
        "raw_encoding": encoding,
        "raw_length": length,
        "raw_sha256": sha256,
        "source_topic": "ratings",
        "source_partition": 0,
        "source_offset": offset,
        "source_timestamp": "2025-11-10T18:06:00.000Z",
    }


def dlq_messages(spark: Any, values: list[bytes | None]) -> list[bytes]:
    """The DLQ values of ``values`` (all invalid), in offset order."""
    parsed = parse_ratings(kafka_df(spark, values))
    rows = dlq_records(parsed).collect()
    assert len(rows) == len(values)
    return [row.value.encode() for row in rows]


NOT_JSON = "value is not a valid JSON object"
NOT_UTF8 = "value is not valid UTF-8"


def test_dlq_record_has_exactly_the_schema_fields_in_order(spark: Any) -> None:
    (message,) = dlq_messages(spark, [b"oops"])
    assert tuple(json.loads(message)) == DLQ_FIELDS


def test_short_dlq_record_keeps_the_whole_value(spark: Any) -> None:
    short = b"oops"
    whole = b"x" * DLQ_RAW_PREFIX_BYTES  # the longest value kept whole
    binary = b"\xff" * DLQ_RAW_PREFIX_BYTES
    messages = dlq_messages(spark, [short, whole, binary, None])
    records = [json.loads(m) for m in messages]
    assert records == [
        expected_dlq(short, 0, NOT_JSON),
        expected_dlq(whole, 1, NOT_JSON),
        expected_dlq(binary, 2, NOT_UTF8),
        expected_dlq(None, 3, "value is null (a tombstone), not a rating"),
    ]
    assert records[0]["raw"] == "oops" and records[0]["raw_length"] == 4
    assert records[1]["raw"] == whole.decode()
    assert base64.b64decode(records[2]["raw"], validate=True) == binary
    assert (records[3]["raw"], records[3]["raw_length"], records[3]["raw_sha256"]) == (
        None,
        None,
        None,
    )


def test_long_non_utf8_value_keeps_a_base64_prefix_its_length_and_hash(spark: Any) -> None:
    value = b"\xff" + bytes(range(256)) * 400  # 102,401 bytes
    (message,) = dlq_messages(spark, [value])
    record = json.loads(message)
    assert record == expected_dlq(value, 0, NOT_UTF8)
    assert base64.b64decode(record["raw"], validate=True) == value[:DLQ_RAW_PREFIX_BYTES]
    assert record["raw_length"] == 102_401
    assert record["raw_sha256"] == hashlib.sha256(value).hexdigest()


@pytest.mark.parametrize(("pad", "kept"), [(0, 65_536), (1, 65_533), (2, 65_534), (3, 65_535)])
def test_long_utf8_value_is_cut_where_a_character_starts(spark: Any, pad: int, kept: int) -> None:
    # Four-byte characters after ``pad`` ASCII bytes: the cut at 64 KiB falls 0..3 bytes into one.
    value = b"a" * pad + "\U0001f3ac".encode() * 20_000
    (message,) = dlq_messages(spark, [value])
    record = json.loads(message)
    assert record == expected_dlq(value, 0, NOT_JSON)
    assert record["raw_encoding"] == "utf-8"
    assert record["raw"].encode() == value[:kept]
    assert (record["raw_length"], record["raw_sha256"]) == (
        len(value),
        hashlib.sha256(value).hexdigest(),
    )


def test_one_byte_over_the_bound_is_cut(spark: Any) -> None:
    value = b"[" + b"1," * (DLQ_RAW_PREFIX_BYTES // 2)  # 65,537 bytes
    (message,) = dlq_messages(spark, [value])
    record = json.loads(message)
    assert record == expected_dlq(value, 0, NOT_JSON)
    assert len(record["raw"]) == DLQ_RAW_PREFIX_BYTES and record["raw_length"] == 65_537


def test_the_longest_dlq_value_stays_within_its_bound(spark: Any) -> None:
    # Control characters are valid UTF-8 that JSON writes six bytes long (\u0001): the worst.
    control = b"\x01" * 1_048_000
    binary = b"\xff" * 1_048_000
    messages = dlq_messages(spark, [control, binary])
    assert json.loads(messages[0]) == expected_dlq(control, 0, NOT_JSON)
    assert json.loads(messages[1]) == expected_dlq(binary, 1, NOT_UTF8)
    assert 6 * DLQ_RAW_PREFIX_BYTES < len(messages[0]) <= DLQ_VALUE_MAX_BYTES
    assert len(messages[1]) < DLQ_VALUE_MAX_BYTES


def test_tumbling_window_bounds_and_cells(spark: Any) -> None:
    values = [
        rating(movie=5, value=4.0, ts=T0),  # first instant of the window
        rating(movie=5, value=4.0, ts=T0 + 59_999),  # last instant of the same window
        rating(movie=6, value=2.5, ts=T0 + 60_000),  # first instant of the next one
        b"garbage",
    ]
    cells = window_cells(parse_ratings(kafka_df(spark, values)), TUMBLING, 10**13)
    expected = spark.createDataFrame(
        [
            Row(
                window_type="tumbling_1min",
                window_start_ms=T0,
                window_end_ms=T0 + 60_000,
                movie_id=5,
                half_stars=8,
                n=2,
                future=0,
                max_event_ms=T0 + 59_999,
            ),
            Row(
                window_type="tumbling_1min",
                window_start_ms=T0 + 60_000,
                window_end_ms=T0 + 120_000,
                movie_id=6,
                half_stars=5,
                n=1,
                future=0,
                max_event_ms=T0 + 60_000,
            ),
            Row(
                window_type=None,
                window_start_ms=None,
                window_end_ms=None,
                movie_id=None,
                half_stars=None,
                n=1,
                future=0,
                max_event_ms=None,
            ),
        ],
        cells.schema,
    )
    assertDataFrameEqual(cells, expected)


def test_sliding_windows_count_an_event_in_each_window(spark: Any) -> None:
    specs = [parse_window_type("tumbling_1min"), parse_window_type("sliding_3min_1min")]
    cells = window_cells(parse_ratings(kafka_df(spark, [rating(ts=T0 + 30_000)])), specs, 10**13)
    got = sorted((r.window_type, r.window_start_ms, r.window_end_ms) for r in cells.collect())
    assert got == [
        ("sliding_3min_1min", T0 - 120_000, T0 + 60_000),
        ("sliding_3min_1min", T0 - 60_000, T0 + 120_000),
        ("sliding_3min_1min", T0, T0 + 180_000),
        ("tumbling_1min", T0, T0 + 60_000),
    ]


def test_sliding_windows_contain_the_event_start_inclusive_end_exclusive(spark: Any) -> None:
    spec = parse_window_type("sliding_5min_1min")
    for ts in (T0 + 30_000, T0, T0 + 59_999):
        cells = window_cells(parse_ratings(kafka_df(spark, [rating(ts=ts)])), [spec], 10**13)
        starts = sorted(r.window_start_ms for r in cells.collect())
        assert len(starts) == 5
        assert all(s <= ts < s + spec.size_ms for s in starts)
        assert starts[-1] == T0


def test_future_events_are_counted_but_do_not_move_the_watermark(spark: Any) -> None:
    far = 4_000_000_000_000  # year 2096: valid, but far beyond the wall clock
    cells = window_cells(
        parse_ratings(kafka_df(spark, [rating(ts=T0), rating(ts=far)])), TUMBLING, T0 + 1_000
    )
    rows = {r.window_start_ms: r for r in cells.collect()}
    assert rows[T0].max_event_ms == T0 and rows[T0].future == 0
    anomaly = rows[far - far % 60_000]
    assert (anomaly.n, anomaly.future, anomaly.max_event_ms) == (1, 1, None)


def test_events_in_range_is_half_open(spark: Any) -> None:
    values = [rating(ts=T0 - 1), rating(ts=T0), rating(ts=T0 + 59_999), rating(ts=T0 + 60_000)]
    parsed = parse_ratings(kafka_df(spark, values))
    got = [r.event_ms for r in events_in_range(parsed, T0, T0 + 60_000).collect()]
    assert sorted(got) == [T0, T0 + 59_999]


def test_python_udfs_run_on_the_workers(spark: Any) -> None:
    """Guards against pyspark-client overwriting pyspark's Python files (Airflow's provider)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    double = F.udf(lambda x: x * 2, LongType())
    assert [r.y for r in spark.range(3).select(double("id").alias("y")).collect()] == [0, 2, 4]


def test_window_cells_bring_the_dlq_messages_of_invalid_records_in_the_same_pass(
    spark: Any,
) -> None:
    from cinestream.stream.cells import BatchCells

    large = b"x" * (2 * DLQ_RAW_PREFIX_BYTES)
    values = [rating(ts=T0), b"oops", rating(ts=T0 + 1), b"\xff\x00", None, large, large]
    parsed = parse_ratings(kafka_df(spark, values))
    cells = BatchCells.from_arrow(window_cells(parsed, TUMBLING, 10**13, with_dlq=True).toArrow())

    # The valid cells are those of the plain pass; five invalid records, all along (the long
    # ones' messages are bounded too).
    plain = BatchCells.from_arrow(window_cells(parsed, TUMBLING, 10**13).toArrow())
    assert cells.valid.to_pylist() == plain.valid.to_pylist()
    assert cells.valid.column_names == plain.valid.column_names
    assert (cells.invalid, len(cells.dlq), cells.dlq_left) == (5, 5, 0)
    assert (plain.invalid, plain.dlq, plain.dlq_left) == (5, (), 5)
    # Each message is exactly the one the Spark sink would write, key included.
    sink = sorted((r.key, r.value.encode()) for r in dlq_records(parsed).collect())
    assert sorted(cells.dlq) == sink
    along = sorted((json.loads(v) for _, v in cells.dlq), key=lambda r: r["source_offset"])
    assert [r["source_offset"] for r in along] == [1, 3, 4, 5, 6]
    assert along[3] == expected_dlq(large, 5, NOT_JSON)


def test_window_cells_without_invalid_records_bring_no_dlq_messages(spark: Any) -> None:
    from cinestream.stream.cells import BatchCells

    parsed = parse_ratings(kafka_df(spark, [rating(ts=T0), rating(ts=T0 + 60_000)]))
    cells = BatchCells.from_arrow(window_cells(parsed, TUMBLING, 10**13, with_dlq=True).toArrow())
    assert (cells.invalid, cells.dlq, cells.rows) == (0, (), 2)
