"""The metrics API against the real PostgreSQL, with windows written by the pipeline's own code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cinestream.api.main import create_app
from cinestream.api.models import Summary, TopMovies, WindowRecord
from cinestream.local.postgres import LocalPostgres
from cinestream.settings import Settings
from tests.integration.reports_fixture import record_degraded_dlq_report
from tests.integration.windows_fixture import T0, eventually, sample_events, write_windows
from tests.reference import SPEC_EXAMPLE_RECORD, recompute
from tests.shared_stack import Pipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as c:
        yield c


def test_empty_store_is_200_with_a_hint(client: TestClient) -> None:
    summary = client.get("/metrics/summary")
    assert summary.status_code == 200
    body = summary.json()
    assert body["windows"] == 0 and body["latest_window"] is None
    assert "cinestream process" in body["hint"]
    assert client.get("/metrics/windows").json() == []
    top = client.get("/metrics/top-movies").json()
    assert top["movies"] == [] and "hint" in top
    Summary.model_validate(body)
    TopMovies.model_validate(top)
    paths = client.get("/openapi.json").json()["paths"]
    schema = paths["/metrics/summary"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/Summary")


def test_windows_summary_and_top_movies_are_exact(pipeline: Pipeline, client: TestClient) -> None:
    events = sample_events()
    write_windows(pipeline.settings, events)
    expected = recompute(events)

    windows = client.get("/metrics/windows", params={"window_type": "tumbling_1min"}).json()
    assert [w["window_start"] for w in windows] == sorted(expected)
    for w in windows:
        assert list(w) == list(SPEC_EXAMPLE_RECORD)
        for field, value in expected[w["window_start"]].items():
            assert w[field] == (pytest.approx(value) if field == "avg_rating" else value)

    ranged = client.get(
        "/metrics/windows", params={"start": "2025-11-10T18:06:00Z", "end": "2025-11-10T18:07:00Z"}
    ).json()
    assert [w["window_start"] for w in ranged] == ["2025-11-10T18:06:00.000Z"]
    newest = client.get("/metrics/windows", params={"limit": 1}).json()
    assert [w["window_start"] for w in newest] == ["2025-11-10T18:07:00.000Z"]

    summary = client.get("/metrics/summary").json()
    assert summary["windows"] == 3
    assert summary["latest_window"]["window_start"] == "2025-11-10T18:07:00.000Z"
    hour = recompute([(u, m, r, T0) for u, m, r, _ in events])  # everything as one window
    (all_of_it,) = hour.values()
    assert summary["last_hour"]["count"] == len(events)
    assert summary["last_hour"]["avg_rating"] == pytest.approx(all_of_it["avg_rating"])
    assert summary["last_hour"]["p50_rating"] == all_of_it["p50_rating"]
    assert summary["last_hour"]["p95_rating"] == all_of_it["p95_rating"]
    top_ids = [m["movie_id"] for m in summary["last_hour"]["top_movies"]]
    assert str(top_ids).replace(" ", "") == all_of_it["top_movies"]
    assert summary["pipeline"]["dlq_count"] == 4
    assert summary["pipeline"]["newest_window_age_s"] > 0

    top = client.get("/metrics/top-movies", params={"minutes": 1, "limit": 3}).json()
    # /docs describes what is served: the bodies fit the documented models exactly.
    for w in windows:
        WindowRecord.model_validate(w)
    Summary.model_validate(summary)
    TopMovies.model_validate(top)
    last_minute = expected["2025-11-10T18:07:00.000Z"]["top_movies"]
    assert (
        str([m["movie_id"] for m in top["movies"]]).replace(" ", "")
        == "[" + ",".join(last_minute.strip("[]").split(",")[:3]) + "]"
    )


def _windows(client: TestClient) -> int:
    return int(client.get("/metrics/summary").json()["windows"])


def test_answers_are_cached_until_the_store_changes(pipeline: Pipeline, client: TestClient) -> None:
    cache = client.app.state.reader.cache  # type: ignore[attr-defined]
    eventually(lambda: cache.generation is not None)  # the listener is connected
    assert _windows(client) == 0
    hits = cache.hits
    assert _windows(client) == 0
    assert cache.hits == hits + 1, "an unchanged store is answered from the cache"

    write_windows(pipeline.settings, sample_events())  # the stream's own commit
    eventually(lambda: _windows(client) == 3, timeout=2)

    # An operator's SQL is noticed as well as the pipeline's writes.
    pipeline.db(
        "DELETE FROM window_metrics WHERE window_start = '2025-11-10T18:07:00Z' RETURNING 1"
    )
    eventually(lambda: _windows(client) == 2, timeout=2)
    newest = client.get("/metrics/windows", params={"limit": 1}).json()
    assert [w["window_start"] for w in newest] == ["2025-11-10T18:06:00.000Z"]


def test_database_outage_is_503_then_recovers(pipeline: Pipeline, client: TestClient) -> None:
    write_windows(pipeline.settings, sample_events())
    eventually(lambda: _windows(client) == 3)
    postgres = LocalPostgres(pipeline.settings)
    postgres.stop(mode="immediate")
    try:
        # Cached answers are dropped as soon as the listener loses the database.
        down = eventually(lambda: (r := client.get("/metrics/summary")).status_code == 503 and r)
        assert "PostgreSQL is unavailable" in down.json()["detail"]
        assert client.get("/metrics/windows").status_code == 503
        assert client.get("/metrics/health").json()["down"] == ["postgres"]
    finally:
        postgres.start()
    eventually(lambda: client.get("/metrics/summary").status_code == 200, timeout=20)
    assert _windows(client) == 3
    assert len(client.get("/metrics/windows").json()) == 3


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/metrics/windows", {"limit": 0}, "limit"),
        ("/metrics/windows", {"limit": "many"}, "limit"),
        ("/metrics/windows", {"start": "yesterday"}, "start: bad time 'yesterday'"),
        ("/metrics/windows", {"start": "0001-01-01T00:00:00+01:00"}, "outside the event-time"),
        ("/metrics/windows", {"window_type": "weekly"}, "window_type"),
        ("/metrics/windows", {"window_type": "tumbling_5min"}, "is not computed"),
        (
            "/metrics/windows",
            {"start": "2025-11-10T18:07:00Z", "end": "2025-11-10T18:06:00Z"},
            "end must be after start",
        ),
        ("/metrics/top-movies", {"minutes": 0}, "minutes"),
        ("/metrics/top-movies", {"minutes": 5_000}, "less than or equal to 1440"),
        ("/metrics/windows", {"limit": 10_000}, "less than or equal to 1440"),
        ("/metrics/top-movies", {"limit": 1000}, "limit"),
    ],
)
def test_bad_parameters_are_422_with_a_message(
    client: TestClient, path: str, params: dict[str, Any], message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("invalid parameters") and message in detail


def test_health_names_what_is_down(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(Settings())) as up:
        ok = up.get("/metrics/health")
        assert ok.status_code == 200 and ok.json()["down"] == []

    monkeypatch.setenv(
        "CINESTREAM_API_DATABASE_URL", "postgresql://cinestream_reader:x@127.0.0.1:1/cinestream"
    )
    with TestClient(create_app(Settings())) as down:
        health = down.get("/metrics/health")
        assert health.status_code == 503 and health.json()["down"] == ["postgres"]
        assert health.json()["status"] == "down"
        assert health.json()["data"]["state"] == "unknown"
        summary = down.get("/metrics/summary")
        assert summary.status_code == 503
        assert "PostgreSQL is unavailable" in summary.json()["detail"]


def test_health_keeps_the_dlq_verdict_apart_from_the_dependencies(
    pipeline: Pipeline, client: TestClient
) -> None:
    """A degraded DLQ verdict is 200 with ``status`` ok and the verdict in ``data`` (a down
    dependency is 503 with ``status`` down, above); two hours later it is stale, not degraded."""
    report_id = record_degraded_dlq_report(pipeline.settings, "cinestream_dlq/test")
    try:
        health = client.get("/metrics/health")
        body = health.json()
        assert health.status_code == 200, body
        assert (body["status"], body["down"]) == ("ok", [])
        assert "degraded" not in body  # the verdict is data's, not a second status
        assert body["data"]["state"] == "degraded" and body["data"]["dlq_report"] == report_id
        assert body["data"]["reason"].startswith("invalid records are 9.09% of the traffic")

        # cinestream_dlq stopped reporting: the writer stamps now(), so the report is aged here.
        pipeline.db(
            "UPDATE dlq_reports SET run_at = now() - interval '2 hours 10 minutes' "
            "WHERE id = %s RETURNING id",
            (report_id,),
        )
        stale = client.get("/metrics/health")
        data = stale.json()["data"]
        assert stale.status_code == 200 and stale.json()["status"] == "ok"
        assert (data["state"], data["verdict"]) == ("stale", "degraded"), data
        assert data["reason"].startswith("the newest cinestream_dlq report is 2 h 10 min old")
    finally:
        # Other tests on this stack read the newest report (doctor): leave none of ours.
        pipeline.db("DELETE FROM dlq_reports WHERE id = %s RETURNING id", (report_id,))
