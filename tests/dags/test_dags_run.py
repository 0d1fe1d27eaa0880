"""The DAGs run for real (`airflow dags test`) on the real stack, and through the REST API."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cinestream.schemas import format_time
from tests.dags.conftest import airflow_run
from tests.reference import recompute
from tests.shared_stack import Pipeline, assert_windows_equal

pytestmark = [pytest.mark.integration, pytest.mark.dags]

MINUTE = 60_000


def _state(output: str) -> str:
    states = re.findall(r"state=(\w+)", output.split("DagRun Finished")[-1][:2000])
    return states[0] if states else "unknown"


def dags_test(dag_id: str, *, conf: dict | None = None, logical_date: str | None = None) -> str:
    args = ["dags", "test", dag_id]
    if logical_date:
        args.append(logical_date)
    if conf is not None:
        args += ["-c", json.dumps(conf)]
    result = airflow_run(*args)
    return result.stdout


def test_pipeline_end_to_end(pipeline: Pipeline, airflow_db: None) -> None:
    from cinestream.quality import read_summary

    started = format_time(datetime.now(tz=UTC))
    start = datetime.now(tz=UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    out = dags_test(
        "cinestream_pipeline",
        conf={
            "count": 4_000,
            "start": start.isoformat(),
            "span_s": 240,
            "seed": 5,
            "duration_s": None,
            "rate": None,
        },
    )
    assert _state(out) == "success", out[-5000:]
    events = pipeline.raw_events()
    assert len(events) == 4_000
    assert pipeline.total_counted() == 4_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    # The quality step validated what this run wrote: every suite has a result from this run
    # (the stack's state dir keeps earlier tests' results too), passed, and logged its line.
    suites = read_summary(pipeline.settings)["suites"]
    assert set(suites) == {"window_metrics", "metrics_topic", "ratings", "continuity"}, suites
    assert all(s["run_at"] >= started and s["success"] for s in suites.values()), suites
    assert re.search(r"OK +suite window_metrics", out), out[-5000:]


def test_quality_dag_fails_on_bad_data_and_passes_on_good(
    pipeline: Pipeline, airflow_db: None
) -> None:
    start = int(time.time() * 1000) // MINUTE * MINUTE - 90 * MINUTE
    pipeline.produce_historical(2_000, start, 2 * MINUTE)
    pipeline.process(check=True)
    good = dags_test("cinestream_quality")
    assert _state(good) == "success", good[-4000:]

    # A window that claims to be empty: the window_metrics suite must fail the task.
    pipeline.db(
        "UPDATE window_metrics SET count = 0 WHERE window_start = "
        "(SELECT min(window_start) FROM window_metrics) RETURNING 1"
    )
    bad = dags_test("cinestream_quality")
    assert _state(bad) == "failed", bad[-4000:]
    assert "expect_column_values_to_be_between(count)" in bad


def _interval(output: str) -> tuple[datetime, datetime]:
    found = re.search(r"data_interval_start=([^,]+), data_interval_end=([^,]+),", output)
    assert found, output[-3000:]
    return datetime.fromisoformat(found[1]), datetime.fromisoformat(found[2])


def _last_asset_event_extra(dag_id: str) -> dict:
    import psycopg

    from cinestream.local.airflow import metadata_db_url
    from cinestream.settings import Settings

    url = metadata_db_url(Settings()).replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extra FROM asset_event WHERE source_dag_id = %s ORDER BY id DESC LIMIT 1",
            (dag_id,),
        ).fetchone()
    assert row is not None, f"{dag_id} recorded no asset event"
    return row[0]  # type: ignore[no-any-return]


def test_backfill_dag_two_hours_exact_and_idempotent(pipeline: Pipeline, airflow_db: None) -> None:
    hour0 = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    start_ms = int(hour0.timestamp() * 1000)
    pipeline.produce_historical(6_000, start_ms, 2 * 60 * MINUTE)
    covered = []
    for hour in (hour0 + timedelta(hours=1), hour0 + timedelta(hours=2)):
        out = dags_test("cinestream_backfill", logical_date=hour.isoformat())
        assert _state(out) == "success", out[-4000:]
        begin, end = _interval(out)
        assert end - begin == timedelta(hours=1)
        covered.append((begin, end))
        # The asset event names the windows the run replaced, for the quality DAG.
        extra = _last_asset_event_extra("cinestream_backfill")
        assert extra["windows_changed"] >= 60
        assert (extra["from"], extra["to"]) == (format_time(begin), format_time(end))
    assert covered[0][1] == covered[1][0]  # two consecutive hours
    events = [
        e
        for e in pipeline.raw_events()
        if covered[0][0].timestamp() * 1000 <= e[3] < covered[1][1].timestamp() * 1000
    ]
    expected = recompute(events)
    assert len(expected) == 60 * sum(1 for b, _ in covered if b >= hour0)
    assert_windows_equal(pipeline.db_windows(), expected)
    first = pipeline.db("SELECT count(*), sum(count) FROM window_metrics")
    out = dags_test("cinestream_backfill", logical_date=(hour0 + timedelta(hours=1)).isoformat())
    assert _state(out) == "success"
    assert pipeline.db("SELECT count(*), sum(count) FROM window_metrics") == first
    assert_windows_equal(pipeline.db_windows(), expected)


def test_reset_dag_empties_everything(pipeline: Pipeline, airflow_db: None) -> None:
    start = int(time.time() * 1000) // MINUTE * MINUTE - 30 * MINUTE
    pipeline.produce_historical(1_000, start, MINUTE)
    pipeline.process(check=True)
    refused = dags_test("cinestream_reset", conf={"confirm": "no"})
    assert _state(refused) == "failed"
    assert pipeline.total_counted() == 1_000

    out = dags_test("cinestream_reset", conf={"confirm": "RESET"})
    assert _state(out) == "success", out[-4000:]
    from cinestream.kafka.admin import partition_offsets

    for topic in (
        pipeline.settings.ratings_topic,
        pipeline.settings.metrics_topic,
        pipeline.settings.dlq_topic,
    ):
        parts = partition_offsets(pipeline.settings, topic)
        assert parts and sum(p.messages for p in parts) == 0
    checkpoint = Path(pipeline.settings.checkpoint_dir.removeprefix("file://"))
    assert not checkpoint.exists()
    assert pipeline.db("SELECT count(*) FROM window_metrics") == [(0,)]


def test_trigger_with_params_through_the_rest_api(pipeline: Pipeline, airflow_db: None) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    from cinestream.local.airflow import admin_password, airflow_env
    from cinestream.settings import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(airflow_port=port)
    env = {**os.environ, **airflow_env(settings)}
    assert airflow_run("dags", "reserialize").returncode == 0
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "api-server did not start"
            time.sleep(1)
        password = admin_password(settings)
        assert password and password != "admin"
        token = httpx.post(
            f"{base}/auth/token", json={"username": "admin", "password": password}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        run = httpx.post(
            f"{base}/api/v2/dags/cinestream_generate/dagRuns",
            headers=headers,
            json={"logical_date": None, "conf": {"count": 123, "seed": 9}},
        )
        assert run.status_code == 200, run.text
        assert run.json()["conf"]["count"] == 123
        bad = httpx.post(
            f"{base}/api/v2/dags/cinestream_generate/dagRuns",
            headers=headers,
            json={"logical_date": None, "conf": {"count": -5}},
        )
        assert bad.status_code == 400, bad.text
        assert "count" in bad.text
        docs = httpx.get(f"{base}/cinestream-quality/", headers=headers)
        assert docs.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_pipeline_waits_for_the_live_processor_holding_the_checkpoint(
    pipeline: Pipeline, airflow_db: None
) -> None:
    from cinestream.stream.stop_files import request_stop

    live = pipeline.start_cli(
        "process", "--trigger", "continuous", "--interval", "2s", log_name="live"
    )
    try:
        start = datetime.now(tz=UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
        out = dags_test(
            "cinestream_pipeline",
            conf={"count": 3_000, "start": start.isoformat(), "span_s": 600, "seed": 9},
        )
        # Its own processor found the live one on the checkpoint: the step waited for that one
        # to commit what the generate step wrote, and the run is green, quality included.
        assert "another processor holds checkpoint" in out, out[-4000:]
        assert "has committed through" in out, out[-4000:]
        assert _state(out) == "success", out[-4000:]
    finally:
        request_stop(pipeline.settings)
        assert live.wait(120) == 0
    events = pipeline.raw_events()
    assert len(events) == 3_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
