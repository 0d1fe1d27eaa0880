"""A fresh stack as `cinestream up` leaves it: Airflow runs the live platform.

One stack of its own (state dir and ports apart from the shared test stack), started and stopped
through the CLI as a newcomer does, with the real Airflow scheduler, api-server, dag-processor
and triggerer: the backlog once through cinestream_pipeline, the processor supervised by
cinestream_stream, the live generator by cinestream_generate, the bounded backfill catchup, the
quality DAG on the asset; a stop from Airflow, a processor killed with SIGKILL, a burst of
invalid records reported by cinestream_dlq's AssetWatcher, then `down`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cinestream.local import airflow
from cinestream.timeparse import parse_instant
from tests.reference import invalid_burst, recompute
from tests.shared_stack import Pipeline, assert_windows_equal
from tests.stack_cli import run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.dags]

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".state-test-live"
# Ports below 32768, outside Linux's range for outgoing connections (32768-60999 here): a daemon
# restarted in a fault test could otherwise find its port taken by some client's socket.
ENV = {
    "CINESTREAM_STATE_DIR": str(STATE),
    "CINESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:27092",
    "CINESTREAM_PG_PORT": "27432",
    "CINESTREAM_API_PORT": "27000",
    "CINESTREAM_DASHBOARD_PORT": "27501",
    "CINESTREAM_AIRFLOW_PORT": "27080",
    "CINESTREAM_LIVE_RATE": "5",
    "CINESTREAM_TRIGGER_INTERVAL": "5s",
}
BACKLOG = 40_400


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_cli(ENV, *args, timeout=timeout)


def _wait(check: Callable[[], Any], what: str, timeout: float = 300, every: float = 3) -> Any:
    return wait_for(check, what, timeout, every)


def _stray_processes() -> list[str]:
    """Command lines of processes that belong to this stack (the state dir appears in them:
    Kafka, PostgreSQL, Airflow's Spark jobs and their stop files)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(STATE) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Any, Any, subprocess.CompletedProcess[str]]]:
    from cinestream.settings import Settings

    _cli("down", timeout=300)
    subprocess.run(["rm", "-rf", str(STATE)], check=True)
    settings = Settings(
        state_dir=STATE,
        kafka_bootstrap=ENV["CINESTREAM_KAFKA_BOOTSTRAP"],
        pg_port=int(ENV["CINESTREAM_PG_PORT"]),
        api_port=int(ENV["CINESTREAM_API_PORT"]),
        dashboard_port=int(ENV["CINESTREAM_DASHBOARD_PORT"]),
        airflow_port=int(ENV["CINESTREAM_AIRFLOW_PORT"]),
        live_rate=5,
    )
    # A fresh stack as a newcomer's: its first start is now, recorded by `up` in the state dir,
    # not one CINESTREAM_FIRST_START in this process's environment would impose on every CLI call.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("CINESTREAM_FIRST_START", raising=False)
        try:
            up = _cli("up")  # in the try: down too when `up` runs past its timeout
            assert up.returncode == 0, up.stdout[-4000:]
            yield settings, airflow.AirflowAPI(settings), up
        finally:
            down = _cli("down", timeout=600)
            assert down.returncode == 0, down.stdout[-3000:]
            deadline = time.monotonic() + 60
            while _stray_processes() and time.monotonic() < deadline:
                time.sleep(1)
            assert not _stray_processes()


def _pipeline(settings: Any) -> Pipeline:
    pipeline = Pipeline(dict(ENV))
    pipeline.settings = settings
    return pipeline


def _runs(api: Any, dag_id: str, **filters: str) -> list[dict[str, Any]]:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return list(api.get(f"/dags/{dag_id}/dagRuns?limit=100&{query}")["dag_runs"])


def _holder(settings: Any) -> str:
    from cinestream.store.checkpoint_lock import CheckpointLock

    return CheckpointLock(settings.resolved_database_url, settings.checkpoint_dir).holder() or ""


def _task_log(settings: Any, run_id: str, attempt: int) -> str:
    path = (
        settings.state_dir
        / "airflow"
        / "logs"
        / "dag_id=cinestream_stream"
        / f"run_id={run_id}"
        / "task_id=ratings_stream_processor"
        / f"attempt={attempt}.log"
    )
    return path.read_text() if path.exists() else ""


def test_make_up_leaves_airflow_running_the_live_platform(live) -> None:  # type: ignore[no-untyped-def]
    settings, api, up = live
    # The first pipeline run was followed task by task and is green.
    assert "cinestream_pipeline: quality success" in up.stdout, up.stdout[-3000:]
    (first,) = _runs(api, "cinestream_pipeline")
    assert first["state"] == "success"
    # Every part of the live platform is active, the audit and the DLQ triage too.
    for dag_id in airflow.PARTS.values():
        assert api.get(f"/dags/{dag_id}")["is_paused"] is False, dag_id
    parts = set(airflow.PARTS.values())
    assert {"cinestream_audit", "cinestream_dlq", "cinestream_quality"} <= parts

    # The processor runs under cinestream_stream and commits; the generator produces.
    assert _holder(settings).startswith("Airflow cinestream_stream.ratings_stream_processor")
    pipeline = _pipeline(settings)
    counted = pipeline.total_counted()
    _wait(lambda: pipeline.total_counted() > counted + 20, "live ratings counted", 180)
    status = _cli("status", "--json")
    assert '"cinestream_generate": "runs the live generator' in status.stdout, status.stdout

    # The backlog was made once: 40,400 ratings with event times in the span the pipeline run
    # was given, not two backlogs; the live ones come after it.
    events = pipeline.raw_events()
    span_end = parse_instant(first["conf"]["start"]).timestamp() + first["conf"]["span_s"]
    backlog = [e for e in events if e[3] < int(span_end * 1000)]
    assert len(backlog) == BACKLOG
    assert len(events) > BACKLOG  # and live ones after it

    # The bounded catchup (3h before the first start, on the hour) ran green, and quality ran
    # on the asset events.
    def catchup_done() -> bool:
        done = _runs(api, "cinestream_backfill", state="success")
        return len(done) >= 3

    _wait(catchup_done, "three catchup runs of cinestream_backfill", 600, 10)
    backfills = _runs(api, "cinestream_backfill")
    assert not [r for r in backfills if r["state"] == "failed"], backfills
    # The bound comes from the first start `up` recorded in this stack's state dir (not from
    # local.secrets.first_start_time(), which a CINESTREAM_FIRST_START would answer by itself).
    recorded = STATE / "first_start"
    assert recorded.exists(), f"`cinestream up` recorded no first start in {recorded}"
    first_start = parse_instant(recorded.read_text().strip()).timestamp()
    assert abs(first_start - time.time()) < 3600, recorded.read_text()  # this stack's, today's
    earliest = min(r["data_interval_start"] for r in backfills)
    assert earliest.startswith(
        time.strftime("%Y-%m-%dT%H:00:00", time.gmtime(first_start - 3 * 3600))
    ), earliest
    asset_runs = _wait(
        lambda: [
            r
            for r in _runs(api, "cinestream_quality", state="success")
            if r["run_type"] == "asset_triggered"
        ],
        "an asset-triggered quality run",
        300,
    )
    assert asset_runs


def _hour_windows(pipeline: Pipeline, hour_ms: int) -> dict[str, dict[str, Any]]:
    from cinestream.schemas import format_time

    lo, hi = format_time(hour_ms), format_time(hour_ms + 3_600_000)
    return {k: v for k, v in pipeline.db_windows().items() if lo <= k < hi}


def _backfill(api: Any, hour_ms: int) -> dict[str, Any]:
    from cinestream.schemas import format_time

    created = api.post(
        "/backfills",
        {
            "dag_id": "cinestream_backfill",
            "from_date": format_time(hour_ms),
            "to_date": format_time(hour_ms + 30 * 60_000),
            "reprocess_behavior": "completed",
            "max_active_runs": 1,
        },
    )
    done = _wait(
        lambda: (b := api.get(f"/backfills/{created['id']}")).get("completed_at") and b,
        f"backfill {created['id']}",
        600,
        5,
    )
    runs = [
        r
        for r in _runs(api, "cinestream_backfill", run_type="backfill")
        if r["data_interval_start"].startswith(format_time(hour_ms)[:19])
    ]
    assert runs and all(r["state"] == "success" for r in runs), runs
    return dict(done)


def test_a_backfill_created_through_the_rest_api_makes_a_late_hour_exact(live) -> None:  # type: ignore[no-untyped-def]
    settings, api, _ = live
    pipeline = _pipeline(settings)
    # Ratings of an hour two hours back arrive now: the stream counts them as late.
    hour = (int(time.time() * 1000) // 3_600_000 - 2) * 3_600_000
    before = pipeline.db("SELECT coalesce(sum(late_total), 0) FROM processor_state")[0][0]
    pipeline.produce_historical(1_500, hour + 10 * 60_000, 20 * 60_000, seed=21)
    _wait(
        lambda: (
            pipeline.db("SELECT coalesce(sum(late_total), 0) FROM processor_state")[0][0]
            >= before + 1_500
        ),
        "the late ratings counted as late",
        180,
    )
    assert _hour_windows(pipeline, hour) == {}

    # A backfill created through the REST API on the DAGs as shipped makes that hour exact.
    _backfill(api, hour)
    in_hour = [e for e in pipeline.raw_events() if hour <= e[3] < hour + 3_600_000]
    assert len(in_hour) == 1_500
    exact = _hour_windows(pipeline, hour)
    assert_windows_equal(exact, recompute(in_hour))
    # Created again, it changes nothing (but the processing time of the rewritten windows).
    _backfill(api, hour)
    assert_windows_equal(_hour_windows(pipeline, hour), recompute(in_hour))
    assert sorted(_hour_windows(pipeline, hour)) == sorted(exact)


def test_a_stop_from_airflow_stops_its_processor_gracefully_and_a_kill_is_retried(live) -> None:  # type: ignore[no-untyped-def]
    settings, api, _ = live
    (run,) = _runs(api, "cinestream_stream", state="running")
    run_id = run["dag_run_id"]
    _wait(lambda: "holding the lock" in _task_log(settings, run_id, 1), "the processor's lock")
    # Marking the task failed in the UI stops its own processor between batches: the task asks
    # through the stop file of that try; the processor (in a session of its own, so Airflow's
    # SIGTERM/SIGKILL of the task do not reach it mid-batch) stops and removes the file.
    api.patch(
        f"/dags/cinestream_stream/dagRuns/{run_id}/taskInstances/ratings_stream_processor",
        {"new_state": "failed"},
    )
    log = _wait(
        lambda: (t := _task_log(settings, run_id, 1)) and "asked the processor to stop" in t and t,
        "the stop request in the task log",
        120,
    )
    stop_file = log.split("asked the processor to stop between batches (")[1].split(")")[0]
    assert "/run/airflow/cinestream_stream.ratings_stream_processor." in stop_file
    _wait(lambda: not _drivers(stop_file), "the stopped processor exiting", 120, 1)
    assert not Path(stop_file).exists()  # read and removed by the processor: a graceful stop

    # The next run resumes from the checkpoint; its processor, killed with SIGKILL, is retried.
    def next_run() -> str | None:
        runs = _runs(api, "cinestream_stream", state="running")
        return runs[0]["dag_run_id"] if runs and runs[0]["dag_run_id"] != run_id else None

    second = _wait(next_run, "the next cinestream_stream run", 180)
    _wait(lambda: "holding the lock" in _task_log(settings, second, 1), "its lock", 240)
    drivers = _drivers(str(STATE))
    assert len(drivers) == 1, drivers
    os.kill(drivers[0], signal.SIGKILL)
    _wait(lambda: "try 2" in _holder(settings), "the retried processor holding the lock", 300)

    # Totals stay exact: stop live generation, let the processor catch up, recompute.
    api.patch("/dags/cinestream_generate", {"is_paused": True})
    for generating in _runs(api, "cinestream_generate", state="running"):
        api.patch(
            f"/dags/cinestream_generate/dagRuns/{generating['dag_run_id']}",
            {"state": "failed"},
        )
    pipeline = _pipeline(settings)
    time.sleep(10)  # the generator task stops producing
    _wait(
        lambda: pipeline.total_counted() == len(pipeline.raw_events()),
        "every rating counted",
        180,
        5,
    )
    assert_windows_equal(pipeline.db_windows(), recompute(pipeline.raw_events()))


def _merged(groups: Any) -> dict[str, int]:
    """Reason (or key) -> count over several reports' groups."""
    out: dict[str, int] = {}
    for group in groups:
        for row in group:
            name = row.get("reason", row.get("key"))
            out[name] = out.get(name, 0) + row["count"]
    return out


def test_a_burst_of_invalid_ratings_is_reported_by_the_dlq_watcher(live) -> None:  # type: ignore[no-untyped-def]
    """Last in this module: the other tests' totals count valid ratings only. The live
    processor puts the burst in the DLQ and cinestream_dlq's AssetWatcher starts a report within
    minutes (not at the next hour); the quality view of the api-server opens it."""
    import httpx

    settings, api, _ = live
    pipeline = _pipeline(settings)

    def reports() -> list[tuple[Any, ...]]:
        return pipeline.db(
            "SELECT id, invalid, valid, degraded, reasons, keys, source, counted FROM dlq_reports "
            "WHERE dlq_topic = %s ORDER BY id",
            (settings.dlq_topic,),
        )

    before = reports()
    assert sum(r[1] for r in before) == 0, before  # the live generator's ratings are all valid
    last = max((r[0] for r in before), default=0)
    pipeline.produce_raw(invalid_burst())

    def burst_reported() -> list[tuple[Any, ...]] | None:
        after = [r for r in reports() if r[0] > last]
        done = sum(r[1] for r in after) >= 100 and any(
            r[6].startswith("cinestream_dlq/asset_triggered__") for r in after
        )
        return after if done else None

    # Every invalid record is counted once over the reports after the burst: the watcher's, and
    # the hourly one when the burst crosses the top of an hour.
    after = _wait(burst_reported, "the burst's cinestream_dlq report", 420, 5)
    # The watcher started a report (more than one when the 5 s trigger split the burst over two
    # batches, each published on its own; the debounce per burst is tests/unit's); any other
    # report is the hourly one.
    triggered = [r for r in after if r[6].startswith("cinestream_dlq/asset_triggered__")]
    assert triggered, [r[6] for r in after]
    assert all(r[6].startswith("cinestream_dlq/scheduled__") for r in after if r not in triggered)
    assert sum(r[1] for r in after) == 100, after
    # ...and the processor's own count of invalid records (published after its commit) grew by
    # exactly the burst between the report before it and the last one.
    counted_before = before[-1][7]["invalid_total"] if before else 0
    assert after[-1][7]["invalid_total"] - counted_before == 100, (before[-1:], after[-1])
    assert _merged(r[4] for r in after) == {
        "rating must be one of 0.5, 1.0, ..., 5.0": 60,
        "value is not a valid JSON object": 25,
        "user_id must be >= 1": 15,
    }
    assert _merged(r[5] for r in after) == {"producer-a": 85, "producer-b": 15}

    # The quality view in the stack's api-server lists the report and opens it.
    report_id = max(after, key=lambda r: r[1])[0]
    token = api.token()
    headers = {"Authorization": f"Bearer {token}"}
    view = httpx.get(f"{settings.airflow_url}/cinestream-quality/", headers=headers, timeout=30)
    assert view.status_code == 200, view.text[:500]
    assert f"href='/cinestream-quality/dlq/{report_id}'" in view.text
    detail = httpx.get(
        f"{settings.airflow_url}/cinestream-quality/dlq/{report_id}", headers=headers, timeout=30
    )
    assert detail.status_code == 200, detail.text[:500]
    assert "value is not a valid JSON object" in detail.text, detail.text[:2000]


def _drivers(marker: str) -> list[int]:
    """Pids of the stream jobs' Python drivers whose command line contains ``marker``."""
    return [
        int(e.name)
        for e in Path("/proc").iterdir()
        if e.name.isdigit()
        and b"ratings_stream_processor.py" in (cmd := _read(e / "cmdline"))
        and b"python" in cmd.split(b"\0")[0]
        and marker.encode() in cmd
    ]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
