"""Every parameter the API cannot serve within its bounds is a 422 with a one-line message, and
the routes never reach the store for one (issue 20). No database: the store reader is a stub."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinestream.api.routes.metrics import MAX_TOP_MOVIES_MINUTES, MAX_WINDOWS_LIMIT
from cinestream.settings import Settings
from cinestream.timeparse import (
    TimeOutOfRangeError,
    parse_duration_ms,
    parse_instant,
    parse_range_bound,
)
from tests.unit.api.stubs import StubReader, client_for


@pytest.fixture
def reader() -> StubReader:
    return StubReader()


@pytest.fixture
def client(reader: StubReader) -> Iterator[TestClient]:
    yield client_for(Settings(), reader)


def assert_422(response: Any, parameter: str, words: str) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"invalid parameters: {parameter}: "), detail
    assert words in detail, detail
    assert "\n" not in detail and len(detail) < 200, detail
    return str(detail)


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("start", "0001-01-01T00:00:00+01:00"),  # no UTC form: OverflowError in astimezone
        ("end", "9999-12-31T23:59:59-01:00"),  # the same past year 9999
        ("start", "0001-01-01T00:00:00Z"),
        ("start", "1970-01-01T00:00:00Z"),
        ("start", "1999-12-31T23:59:59.999Z"),
        ("end", "2100-01-01T00:00:00.001Z"),
        ("end", "2100-01-01T01:00:00+00:30"),
        ("start", "2200-01-01"),
    ],
)
def test_a_time_outside_the_spec_range_is_422(
    client: TestClient, reader: StubReader, parameter: str, value: str
) -> None:
    response = client.get("/metrics/windows", params={parameter: value})
    detail = assert_422(response, parameter, "outside the event-time range")
    assert "2000-01-01T00:00:00.000Z .. 2100-01-01T00:00:00.000Z" in detail
    assert reader.keys == []


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2025-11-10T25:00:00Z",
        "2025-11-10T18:00:00+99:00",
        "2025-11-10T18:00:00\x00",  # datetime.fromisoformat accepts it
        "2025-11-10\x0018:00:00",
        "２０２５-11-10T18:00:00Z",
        "2025-11-10T18:00:00Z" * 100,
    ],
)
def test_a_malformed_time_is_422_in_one_short_line(
    client: TestClient, reader: StubReader, value: str
) -> None:
    assert_422(client.get("/metrics/windows", params={"start": value}), "start", "bad time")
    assert reader.keys == []


def test_the_ends_of_the_spec_range_are_served(client: TestClient, reader: StubReader) -> None:
    response = client.get(
        "/metrics/windows",
        params={"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "limit": 5},
    )
    assert response.status_code == 200 and response.json() == []
    ((_, _, start, end, limit, _),) = reader.keys
    assert (start, end, limit) == (
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        5,
    )


def test_top_movies_over_more_than_a_day_is_422(client: TestClient, reader: StubReader) -> None:
    for minutes in (MAX_TOP_MOVIES_MINUTES + 1, 4_320, 10**30):
        response = client.get("/metrics/top-movies", params={"minutes": minutes})
        assert_422(response, "minutes", f"less than or equal to {MAX_TOP_MOVIES_MINUTES}")
    assert reader.keys == []
    ok = client.get("/metrics/top-movies", params={"minutes": MAX_TOP_MOVIES_MINUTES})
    assert ok.status_code == 200
    assert MAX_TOP_MOVIES_MINUTES == 1_440


def test_top_movies_beyond_the_retention_is_422(reader: StubReader) -> None:
    client = client_for(Settings(retention="1h"), reader)
    response = client.get("/metrics/top-movies", params={"minutes": 61})
    assert_422(response, "minutes", "CINESTREAM_RETENTION=1h")
    assert reader.keys == []


def test_windows_beyond_a_day_of_records_is_422(client: TestClient, reader: StubReader) -> None:
    for limit in (MAX_WINDOWS_LIMIT + 1, 10_000):
        response = client.get("/metrics/windows", params={"limit": limit})
        assert_422(response, "limit", f"less than or equal to {MAX_WINDOWS_LIMIT}")
    assert reader.keys == []
    assert client.get("/metrics/windows", params={"limit": MAX_WINDOWS_LIMIT}).status_code == 200
    assert MAX_WINDOWS_LIMIT == 1_440


@pytest.mark.parametrize(
    "window_type",
    [
        "tumbling_" + "9" * 400 + "min",  # a duration too long for a float: OverflowError
        "sliding_" + "1" * 60 + "min_1min",
    ],
)
def test_an_overlong_window_type_is_422_in_one_short_line(
    client: TestClient, reader: StubReader, window_type: str
) -> None:
    response = client.get("/metrics/windows", params={"window_type": window_type})
    assert_422(response, "window_type", "longer than 64 characters")
    assert reader.keys == []


# --- the parsers behind them (the CLI and the settings use them too) ---------------------------
def test_a_time_without_a_utc_form_is_a_value_error_not_an_overflow() -> None:
    with pytest.raises(TimeOutOfRangeError, match="no UTC form"):
        parse_instant("0001-01-01T00:00:00+01:00")
    with pytest.raises(TimeOutOfRangeError, match="no UTC form"):
        parse_instant("9999-12-31T23:59:59-01:00")


def test_a_range_bound_is_within_the_spec_range() -> None:
    assert parse_range_bound("2000-01-01T01:00:00+01:00") == datetime(2000, 1, 1, tzinfo=UTC)
    assert parse_range_bound("2100-01-01T00:00:00") == datetime(2100, 1, 1, tzinfo=UTC)
    for text in ("1999-12-31T23:59:59.999Z", "2100-01-01T00:00:00.001Z", "0001-01-01T00:00Z"):
        with pytest.raises(TimeOutOfRangeError, match="outside the event-time range"):
            parse_range_bound(text)
    with pytest.raises(ValueError, match="bad time 'noon'"):
        parse_range_bound("noon")


def test_a_duration_too_long_for_a_float_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"bad duration '9{40}'\.\.\.: too long"):
        parse_duration_ms("9" * 400 + "min")
