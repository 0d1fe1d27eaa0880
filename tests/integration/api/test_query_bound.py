"""The API's read-only role has a statement_timeout, and a query it cuts is a clear 503 (issue 20).

On the real PostgreSQL of the test stack, whose roles ``ensure_local_databases`` made.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from fastapi.testclient import TestClient

from cinestream.api.main import create_app
from cinestream.settings import Settings
from cinestream.store.schema import READER_ROLE
from cinestream.timeparse import parse_duration_ms
from tests.integration.windows_fixture import eventually, sample_events, write_windows
from tests.shared_stack import Pipeline

pytestmark = pytest.mark.integration


def reader_timeout_ms(settings: Settings) -> int:
    """The statement_timeout a new session of the API's role gets, in milliseconds."""
    with psycopg.connect(settings.resolved_api_database_url) as conn:
        (user,) = conn.execute("SELECT current_user").fetchone() or (None,)
        assert user == READER_ROLE
        (shown,) = conn.execute("SHOW statement_timeout").fetchone() or ("0",)
    assert shown != "0", "the API's role runs statements without a time limit"
    return parse_duration_ms(shown)


def test_the_reader_role_cancels_a_statement_past_its_timeout(pipeline: Pipeline) -> None:
    timeout_ms = reader_timeout_ms(pipeline.settings)
    assert 1_000 <= timeout_ms <= 30_000  # bounds a request, not a second and not a minute
    with (
        psycopg.connect(pipeline.settings.resolved_api_database_url) as conn,
        pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"),
    ):
        conn.execute("SELECT pg_sleep(%s)", (timeout_ms / 1000 + 1,))


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as c:
        yield c


def test_a_query_the_timeout_cancels_is_a_503_in_one_line(
    pipeline: Pipeline, client: TestClient
) -> None:
    write_windows(pipeline.settings, sample_events())
    assert client.get("/metrics/top-movies", params={"minutes": 3}).status_code == 200
    # An operator's transaction holds a lock the API's first query waits for, longer than the
    # API's role may wait: the query is cancelled by its statement_timeout.
    with psycopg.connect(pipeline.settings.resolved_database_url) as blocker:
        blocker.execute("LOCK TABLE window_state IN ACCESS EXCLUSIVE MODE")
        cut = client.get("/metrics/top-movies", params={"minutes": 7})
        blocker.rollback()
    assert cut.status_code == 503, cut.text
    assert cut.headers["content-type"] == "application/json"
    detail = cut.json()["detail"]
    assert "cancelled (canceling statement due to statement timeout)" in detail
    assert "shorter range or fewer rows" in detail and "\n" not in detail
    # The pool's connection survived the cancel: the same request is answered at once after.
    after = client.get("/metrics/top-movies", params={"minutes": 7})
    assert after.status_code == 200 and after.json()["movies"]
    assert client.get("/metrics/health").json()["down"] in ([], ["kafka"])


def test_health_answers_while_store_queries_wait_on_a_lock(
    pipeline: Pipeline, client: TestClient
) -> None:
    """A crowd of requests stuck in PostgreSQL takes at most half the pool: a health check
    still gets a connection and finds PostgreSQL up (it used to wait for the pool, then say
    PostgreSQL was down)."""
    write_windows(pipeline.settings, sample_events())
    max_queries = client.app.state.reader.max_queries  # type: ignore[attr-defined]

    def waiting_on_the_lock() -> int:
        ((n,),) = pipeline.db(
            "SELECT count(*) FROM pg_locks WHERE relation = 'window_state'::regclass "
            "AND NOT granted"
        )
        return int(n)

    with (
        psycopg.connect(pipeline.settings.resolved_database_url) as blocker,
        ThreadPoolExecutor(max_workers=12) as crowd,
    ):
        blocker.execute("LOCK TABLE window_state IN ACCESS EXCLUSIVE MODE")
        answers = [
            crowd.submit(client.get, "/metrics/top-movies", params={"minutes": m})
            for m in range(10, 22)  # twelve answers, none of them cached
        ]
        eventually(lambda: waiting_on_the_lock() == max_queries)
        health = client.get("/metrics/health")
        waiting = waiting_on_the_lock()
        blocker.rollback()
        responses = [a.result() for a in answers]
    assert health.json()["dependencies"]["postgres"] == {"state": "up"}, health.text
    assert waiting == max_queries
    for response in responses:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            detail = response.json()["detail"]
            assert "the API is busy" in detail or "cancelled" in detail, detail
