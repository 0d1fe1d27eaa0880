"""cinestream_audit and cinestream_dlq on the real stack.

One test, one topic set and one Spark run, to stay cheap: a small Airflow of its own on the test
stack (api-server, scheduler, triggerer; every other DAG paused) watches the DLQ through the
Kafka provider's trigger while ``airflow dags test`` runs the audit: a correct range passes, a
window altered in PostgreSQL is found and the audit's backfill repairs it; a burst of invalid
records starts cinestream_dlq through the trigger and its report names the reasons; the quality
view in the api-server shows both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cinestream.schemas import format_time
from tests.dags.conftest import AIRFLOW, airflow_run
from tests.dags.test_dags_run import _state, dags_test
from tests.reference import recompute
from tests.shared_stack import TEST_STATE, Pipeline, assert_windows_equal
from tests.stack_cli import wait_for as _wait

pytestmark = [pytest.mark.integration, pytest.mark.dags]

MINUTE = 60_000
VALID, INVALID = 1_000, 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _airflow_db() -> str:
    from cinestream.local.airflow import metadata_db_url
    from cinestream.settings import Settings

    return metadata_db_url(Settings()).replace("postgresql+psycopg2://", "postgresql://")


@contextmanager
def watching_airflow() -> Iterator[tuple[str, dict[str, str]]]:
    """api-server, scheduler and triggerer on the test stack, only cinestream_dlq unpaused; the
    DAGs parsed with this test's topics (the watcher's asset is the test's DLQ topic)."""
    from cinestream.local.airflow import airflow_env
    from cinestream.settings import Settings

    settings = Settings(airflow_port=_free_port())
    env = {
        **os.environ,
        **airflow_env(settings),
        "AIRFLOW__API__WORKERS": "1",
        # Log servers on free ports: another stack's Airflow may hold the defaults.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
    }
    result = airflow_run(
        "dags", "reserialize", env={"AIRFLOW__API__PORT": str(settings.airflow_port)}
    )
    assert result.returncode == 0, result.stdout[-3000:]
    with psycopg.connect(_airflow_db()) as conn:
        paused = conn.execute(
            "UPDATE dag SET is_paused = (dag_id <> 'cinestream_dlq') "
            "WHERE dag_id LIKE 'cinestream%' RETURNING dag_id, is_paused"
        ).fetchall()
    assert ("cinestream_dlq", False) in paused, paused
    procs = []
    for component in ("api-server", "scheduler", "triggerer"):
        log = TEST_STATE / "logs" / f"audit-dlq-{component}.log"
        out = os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        procs.append(
            subprocess.Popen(
                [AIRFLOW, component],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # As `up` starts Airflow: what it creates in the shared stack's state dir (task
                # log folders) is its owner's only, or the state-dir tests after it count them.
                umask=0o077,
            )
        )
    try:
        yield settings.airflow_url, env
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _invalid_records() -> list[tuple[bytes | None, bytes | None]]:
    """100 invalid ratings of three kinds from two producers."""
    ok = {"user_id": 1, "movie_id": 2, "timestamp": 1_764_547_200_000}
    return (
        [(b"producer-a", json.dumps({**ok, "rating": 7}).encode())] * 60
        + [(b"producer-a", b"not json")] * 25
        + [(b"producer-b", json.dumps({**ok, "user_id": 0, "rating": 3}).encode())] * 15
    )


def test_audit_repairs_a_window_and_the_dlq_watcher_reports_a_burst(
    pipeline: Pipeline, airflow_db: None
) -> None:
    hour0 = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    h0 = int(hour0.timestamp() * 1000)
    pipeline.produce_historical(VALID, h0, 10 * MINUTE)
    pipeline.produce_raw(_invalid_records())
    conf = {"start": format_time(h0), "end": format_time(h0 + 60 * MINUTE)}

    with watching_airflow() as (airflow_url, _env):
        # On start the scheduler makes the hourly run of the latest hour: its report (nothing in
        # the DLQ yet) comes first, so the burst's report is the trigger's. Up to 7 minutes: CI's
        # run of 2026-12-02 started this test beside the cluster and live stacks' cold starts
        # (their setups took 460 and 380 s) and the scheduler's first run missed 180 s.
        first = _wait(lambda: _reports(pipeline), "the first cinestream_dlq report", 420)
        assert [r[1:4] for r in first] == [(0, 0, False)], first
        pipeline.process(check=True)  # 1,000 windowed, 100 to the DLQ: the watcher sees them

        # A correct range passes: no backfill (the mapped task has nothing to do), one record.
        clean = dags_test("cinestream_audit", conf=conf)
        assert _state(clean) == "success", clean[-5000:]
        assert f"OK audit [{conf['start']}, {conf['end']}): 10 windows, 1000 ratings" in clean

        # The burst started cinestream_dlq through the trigger; its report names the reasons.
        # The hourly run may also fall inside this test (it crosses the top of an hour one time
        # in a dozen): then the burst's records are split between the two reports, each once.
        after = _wait(lambda: _burst_reported(pipeline), "the burst's cinestream_dlq report", 180)
        triggered = [r for r in after if r[6].startswith("cinestream_dlq/asset_triggered__")]
        # One burst, one watcher report (the trigger is debounced); any other is the hourly one.
        assert len(triggered) == 1, [r[6] for r in after]
        assert all(
            r[6].startswith("cinestream_dlq/scheduled__") for r in after if r not in triggered
        ), [r[6] for r in after]
        assert (sum(r[1] for r in after), sum(r[2] for r in after)) == (INVALID, VALID)
        report_id = max(after, key=lambda r: r[1])[0]  # the report holding most of the burst
        # The newest report's verdict covers the whole hour's reports, so all of the burst.
        newest_degraded = max(after, key=lambda r: r[0])[3]
        assert newest_degraded is True  # 100 / 1,100 = 9.1 % > 5 %
        assert _merged(r[4] for r in after) == {
            "rating must be one of 0.5, 1.0, ..., 5.0": 60,
            "value is not a valid JSON object": 25,
            "user_id must be >= 1": 15,
        }
        assert _merged(r[5] for r in after) == {"producer-a": 85, "producer-b": 15}

        # A window altered in PostgreSQL (a closed one: the watermark is minute 8) is found, the
        # audit's backfill replaces exactly its hour, and the re-audit passes.
        altered = h0 + 2 * MINUTE
        assert pipeline.db(
            "UPDATE window_metrics SET count = count - 1 WHERE window_type = 'tumbling_1min' "
            "AND window_start = to_timestamp(%s) RETURNING count",
            (altered / 1000,),
        ) == [(pipeline.db_windows()[format_time(altered)]["count"],)]
        repaired = dags_test("cinestream_audit", conf=conf)
        assert _state(repaired) == "success", repaired[-5000:]
        assert f"DIFF tumbling_1min {format_time(altered)} postgres: count " in repaired
        assert_windows_equal(pipeline.db_windows(), recompute(_valid_events(pipeline)))
        audits = pipeline.db(
            "SELECT phase, ok, differences, repair, range_start, range_end FROM audit_runs "
            "ORDER BY id DESC LIMIT 2"
        )
        hour = [format_time(h0), format_time(h0 + 60 * MINUTE)]
        assert [(p, ok, d, r) for p, ok, d, r, _, _ in audits] == [
            ("re-audit", True, 0, [hour]),
            ("audit", False, 1, [hour]),
        ]

        # The quality view in the api-server: both strips, the degraded banner, the details.
        token = _wait(lambda: _token(airflow_url), "the api-server to answer", 120)
        headers = {"Authorization": f"Bearer {token}"}
        view = httpx.get(f"{airflow_url}/cinestream-quality/", headers=headers, timeout=30)
        assert view.status_code == 200, view.text[:500]
        (audit_id,) = pipeline.db("SELECT max(id) FROM audit_runs WHERE phase = 'audit'")[0]
        assert f"/cinestream-quality/audits/{audit_id}" in view.text
        assert f"/cinestream-quality/dlq/{report_id}" in view.text
        assert "DEGRADED" in view.text and "audit after backfill" in view.text
        detail = httpx.get(
            f"{airflow_url}/cinestream-quality/audits/{audit_id}", headers=headers, timeout=30
        )
        assert f"DIFF tumbling_1min {format_time(altered)} postgres" in detail.text
        dlq = httpx.get(f"{airflow_url}/cinestream-quality/dlq/{report_id}", headers=headers)
        assert "value is not a valid JSON object" in dlq.text and "producer-b" in dlq.text

    # A window where PostgreSQL holds more ratings than the topic (as after retention): a
    # backfill keeps such a window, so none runs for it, and the run fails with one line naming
    # it and why (before: a backfill of its hour, then "the backfill did not repair ...").
    more = h0 + 4 * MINUTE
    counted = pipeline.db_windows()[format_time(more)]["count"]
    assert pipeline.db(
        "UPDATE window_metrics SET count = count + 5 WHERE window_type = 'tumbling_1min' "
        "AND window_start = to_timestamp(%s) RETURNING count",
        (more / 1000,),
    ) == [(counted + 5,)]
    left = dags_test("cinestream_audit", conf=conf)
    assert _state(left) == "failed", left[-5000:]
    assert (
        f"not repaired: 1 window (tumbling_1min {format_time(more)}): PostgreSQL holds more "
        "ratings than the topic still has" in left
    ), left[-5000:]
    assert "the backfill did not repair" not in left
    assert pipeline.db_windows()[format_time(more)]["count"] == counted + 5  # left as it is
    ((phase, repair, lines),) = pipeline.db(
        "SELECT phase, repair, lines FROM audit_runs ORDER BY id DESC LIMIT 1"
    )
    assert (phase, repair) == ("audit", [])  # nothing backfilled, so nothing re-audited
    assert lines[0].startswith(f"UNREPAIRABLE tumbling_1min {format_time(more)}: "), lines


def _valid_events(pipeline: Pipeline) -> list[tuple[int, int, float, int]]:
    """The generator's ratings (the invalid ones are the two test producers')."""
    from cinestream.kafka.read import read_all
    from tests.reference import events_from_messages

    messages = read_all(pipeline.settings, pipeline.settings.ratings_topic)
    valid = [m for m in messages if m.key() not in (b"producer-a", b"producer-b")]
    assert len(valid) == VALID
    return events_from_messages(valid)


def _reports(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    return pipeline.db(
        "SELECT id, invalid, valid, degraded, reasons, keys, source FROM dlq_reports "
        "WHERE dlq_topic = %s ORDER BY id",
        (pipeline.settings.dlq_topic,),
    )


def _burst_reported(pipeline: Pipeline) -> list[tuple[Any, ...]] | None:
    """The reports after the first once they hold every invalid record of the burst and one of
    them was started by the watcher (None before)."""
    after = _reports(pipeline)[1:]
    done = sum(r[1] for r in after) >= INVALID and any(
        r[6].startswith("cinestream_dlq/asset_triggered__") for r in after
    )
    return after if done else None


def _merged(groups: Iterator[list[dict[str, Any]]]) -> dict[str, int]:
    """Reason (or key) -> count over several reports' groups."""
    out: dict[str, int] = {}
    for group in groups:
        for row in group:
            name = row.get("reason", row.get("key"))
            out[name] = out.get(name, 0) + row["count"]
    return out


def _token(base: str) -> str | None:
    from cinestream.local.airflow import admin_password
    from cinestream.settings import Settings

    password = admin_password(Settings())
    if password is None:
        return None
    try:
        response = httpx.post(
            f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=5
        )
    except httpx.HTTPError:
        return None
    return response.json().get("access_token") if response.status_code < 300 else None
