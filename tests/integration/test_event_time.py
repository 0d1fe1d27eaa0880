"""Event time against the wall clock on the real Kafka, Spark and PostgreSQL (issue 12's live
symptoms): a producer clock minutes ahead must not close the window real time is still filling,
and a rating from 2090 must anchor nothing."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from cinestream.api.main import create_app
from cinestream.api.models import Summary
from cinestream.schemas import format_time
from cinestream.settings import Settings
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

W = 60_000


def _ratings(times: list[int], movie: int = 7) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (
            str(i + 1).encode(),
            json.dumps(
                {"user_id": i + 1, "movie_id": movie, "rating": 4.0, "timestamp": ts}
            ).encode(),
        )
        for i, ts in enumerate(times)
    ]


def _fresh_minute() -> int:
    """The start of a minute that has at least 40 s to run (so two runs fit inside it)."""
    now = int(time.time() * 1000)
    if now % W > 20_000:
        time.sleep((W - now % W) / 1000 + 0.5)
        now = int(time.time() * 1000)
    return now - now % W


def test_a_producer_clock_minutes_ahead_does_not_close_the_live_window(pipeline: Pipeline) -> None:
    minute = _fresh_minute()
    now = int(time.time() * 1000)
    # Run 1: 200 ratings of the last seconds, and one from a clock 4 min 50 s fast (valid: inside
    # the 5-minute future tolerance).
    pipeline.produce_raw(_ratings([minute + i * 10 for i in range(200)] + [now + 290_000]))
    pipeline.process(check=True)
    # Run 2: 500 more ratings stamped "now", in the same still-open minute.
    pipeline.produce_raw(_ratings([minute + 5_000 + i * 10 for i in range(500)]))
    pipeline.process(check=True)
    windows = pipeline.db_windows()
    assert windows[format_time(minute)]["count"] == 700, windows
    assert sum(w["count"] for w in windows.values()) == 701
    (late,) = pipeline.db("SELECT late_total FROM processor_state")[0]
    assert late == 0
    (watermark,) = pipeline.db("SELECT watermark_ms FROM processor_state")[0]
    assert watermark <= int(time.time() * 1000) - pipeline.settings.allowed_lateness_s * 1000


def test_a_rating_from_2090_anchors_nothing(pipeline: Pipeline) -> None:
    minute = _fresh_minute()
    far = 3_789_000_000_000  # 2090-01-24, schema-valid, 64 years ahead of the wall clock
    pipeline.produce_raw(
        _ratings([minute - 2 * W + i * 100 for i in range(300)] + [minute + 1_000])
        + _ratings([far], movie=99)
    )
    pipeline.process(check=True)
    far_start = format_time(far - far % W)
    assert far_start in pipeline.db_windows()  # kept: counted in its window, as the SPEC says
    (future,) = pipeline.db("SELECT future_total FROM processor_state")[0]
    assert future == 1

    with TestClient(create_app(Settings())) as client:
        summary = client.get("/metrics/summary").json()
        Summary.model_validate(summary)
        assert summary["latest_window"]["window_start"] == format_time(minute)
        assert summary["future_windows"] == {
            "windows": 1,
            "ratings": 1,
            "from": far_start,
            "to": format_time(far - far % W + W),
        }
        assert summary["last_hour"]["to"] == format_time(minute + W)
        assert summary["last_hour"]["count"] == 301
        assert summary["pipeline"]["future_ratings"] == 1
        windows = client.get("/metrics/windows").json()
        assert [w["window_start"] for w in windows][-1] == format_time(minute)
        top = client.get("/metrics/top-movies", params={"minutes": 60}).json()
        assert top["to"] == format_time(minute + W)
        assert 99 not in [m["movie_id"] for m in top["movies"]]
        # Asked for explicitly, the future window is there.
        asked = client.get("/metrics/windows", params={"start": far_start}).json()
        assert [w["window_start"] for w in asked] == [far_start]

    doctor = pipeline.cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout[doctor.stdout.index("{") :])["checks"]}
    assert checks["future"]["status"] == "WARN"
    assert "1 windows (1 ratings) start after this clock" in checks["future"]["detail"]
    assert far_start in checks["future"]["detail"]
    assert f"latest window ends {format_time(minute + W)}" in checks["metrics"]["detail"]

    # Validating a range that holds only the future window checks nothing, and says so: no suite
    # reports OK of windows it did not validate.
    until = format_time(far - far % W + W)
    only_future = pipeline.cli("validate", "--start", far_start, "--end", until)
    assert only_future.returncode == 1, only_future.stdout[-2000:]
    assert "NONE no window of the range was checked: its 1 windows start after the wall clock" in (
        only_future.stdout
    )
    assert "OK   suite" not in only_future.stdout
    assert checks["clock"]["status"] == "WARN"  # the newest record is stamped 64 years ahead
