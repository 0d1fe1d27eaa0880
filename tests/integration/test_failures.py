"""Crashes and outages under a running processor: totals stay exact, nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from cinestream.errors import CinestreamError
from cinestream.local.kafka_nodes import LocalKafka
from cinestream.local.postgres import LocalPostgres
from cinestream.store.connection import STORE_LOCK
from cinestream.stream.checkpoint_log import latest_batch
from cinestream.stream.stop_files import request_stop
from tests.integration.conftest import Pipeline, assert_windows_equal
from tests.reference import recompute

pytestmark = pytest.mark.integration

MINUTE = 60_000


def _wait_for_batches(pipeline: Pipeline, n: int, proc, timeout: float = 240) -> int:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = pipeline.db("SELECT count(*) FROM processor_batches")[0][0]
        except Exception:
            done = 0
        if done >= n:
            return int(done)
        assert proc.poll() is None, open(proc.log_path).read()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"fewer than {n} batches after {timeout}s")


def test_kill_9_mid_run_then_restart_is_exact(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 200) * MINUTE
    # 40,000 ratings in batches of 4,000: ten batches, killed after the third commit.
    pipeline.produce_historical(40_000, start, 20 * MINUTE)
    small_batches = {"CINESTREAM_MAX_OFFSETS_PER_TRIGGER": "4000"}
    proc = pipeline.start_cli(
        "process", "--trigger", "available-now", extra_env=small_batches, log_name="kill9"
    )
    _wait_for_batches(pipeline, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    partial = pipeline.total_counted()
    assert 0 < partial < 40_000

    rerun = pipeline.process("--wait-for-lock", "30", extra_env=small_batches, check=True)
    assert "resuming from checkpoint" in rerun.stdout
    events = pipeline.raw_events()
    assert pipeline.total_counted() == 40_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))
    # every batch id committed exactly once, and their counts add up
    assert pipeline.db(
        "SELECT sum(valid), count(*) = count(DISTINCT batch_id) FROM processor_batches"
    )[0] == (40_000, True)


def _end_lock_waiters(conn: psycopg.Connection[Any]) -> None:
    """Terminate every session waiting for a lock (a processor's commit behind the held store
    lock)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )


def test_a_processor_killed_during_a_background_commit_reads_that_batch_again(
    pipeline: Pipeline,
) -> None:
    # A batch's commit runs while Spark reads the next one, so Spark marks it done before
    # PostgreSQL has it. Kill the processor in that gap: the next start must read it again.
    start = (int(time.time() * 1000) // MINUTE - 100) * MINUTE
    small_batches = {"CINESTREAM_MAX_OFFSETS_PER_TRIGGER": "5000"}
    pipeline.produce_historical(10_000, start, 5 * MINUTE, seed=1)
    pipeline.process(extra_env=small_batches, check=True)  # batches 0 and 1
    pipeline.produce_historical(10_000, start + 5 * MINUTE, 5 * MINUTE, seed=2)
    commits = Path(urlsplit(pipeline.settings.checkpoint_dir).path) / "commits"
    committed = latest_batch([p.name for p in commits.iterdir()])
    assert committed is not None
    handed_off = committed + 1

    with psycopg.connect(pipeline.settings.resolved_database_url, autocommit=True) as blocker:
        # Every commit waits for the store lock: this session holds it.
        blocker.execute("SELECT pg_advisory_lock(%s)", (STORE_LOCK,))
        proc = pipeline.start_cli(
            "process", "--trigger", "available-now", extra_env=small_batches, log_name="handoff"
        )
        deadline = time.monotonic() + 240
        while latest_batch([p.name for p in commits.iterdir()]) != handed_off:
            assert proc.poll() is None, open(proc.log_path).read()[-3000:]  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"Spark never marked batch {handed_off} done"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # The killed processor's commit is still waiting for the lock: end it, then let go.
        _end_lock_waiters(blocker)
        blocker.execute("SELECT pg_advisory_unlock(%s)", (STORE_LOCK,))
    assert pipeline.db("SELECT max(batch_id) FROM processor_batches") == [(committed,)]
    assert pipeline.db("SELECT handed_off_batch FROM processor_lock") == [(handed_off,)]
    assert pipeline.total_counted() == 10_000

    doctor = pipeline.cli("doctor")
    line = next(x for x in doctor.stdout.splitlines() if x.split()[1:2] == ["checkpoint"])
    assert f"batch {handed_off} is marked done but not in PostgreSQL yet" in line, doctor.stdout

    rerun = pipeline.process("--wait-for-lock", "30", extra_env=small_batches, check=True)
    assert (
        f"batch {handed_off} is marked done in the checkpoint but its commit to PostgreSQL did "
        "not finish"
    ) in rerun.stdout
    events = pipeline.raw_events()
    assert pipeline.total_counted() == 20_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))
    (valid, batches, distinct, last) = pipeline.db(
        "SELECT sum(valid), count(*), count(DISTINCT batch_id), max(batch_id) "
        "FROM processor_batches"
    )[0]
    assert (valid, batches) == (20_000, distinct) and last > handed_off


def test_a_failed_background_commit_stops_an_idle_query_and_is_read_again(
    pipeline: Pipeline,
) -> None:
    # No batch follows to report the failure: the processor must notice it by itself.
    start = (int(time.time() * 1000) // MINUTE - 100) * MINUTE
    pipeline.produce_historical(1_000, start, MINUTE)
    with psycopg.connect(pipeline.settings.resolved_database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (STORE_LOCK,))
        proc = pipeline.start_cli(
            "process",
            "--trigger",
            "continuous",
            "--interval",
            "1s",
            extra_env={"CINESTREAM_DB_RETRY_TIMEOUT_S": "3"},
            log_name="commit-failed",
        )
        log_path = Path(proc.log_path)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 240
        while "a batch's commit failed; stopping the query" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            # The commit waits for the store lock: end its session until its retries run out.
            _end_lock_waiters(blocker)
            time.sleep(0.5)
        blocker.execute("SELECT pg_advisory_unlock(%s)", (STORE_LOCK,))
    pipeline.wait_for_total(1_000, proc=proc, timeout=120)
    request_stop(pipeline.settings)
    assert proc.wait(120) == 0, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "PostgreSQL still unavailable after 3s" in log
    assert "is marked done in the checkpoint but its commit to PostgreSQL did not finish" in log
    events = pipeline.raw_events()
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert pipeline.db("SELECT sum(valid), count(*) FROM processor_batches") == [(1_000, 1)]


def test_broker_and_database_outages_under_a_continuous_processor(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    start = (int(time.time() * 1000) // MINUTE - 60) * MINUTE
    proc = pipeline.start_cli(
        "process",
        "--trigger",
        "continuous",
        "--interval",
        "2s",
        log_name="outages",
        extra_env={"CINESTREAM_DB_RETRY_TIMEOUT_S": "600"},
    )
    # Each burst spans one minute of event time, inside the 2-minute allowed lateness: the running
    # processor may read one partition's part of a burst a batch after another's.
    pipeline.produce_historical(3_000, start, MINUTE, seed=1)
    pipeline.wait_for_total(3_000, proc=proc)

    # A second processor on the same checkpoint is refused with a clear message.
    second = pipeline.process()
    assert second.returncode == 75
    assert "another processor is running on checkpoint" in second.stdout

    # The broker goes away and comes back.
    LocalKafka(settings).stop()
    time.sleep(8)
    LocalKafka(settings).start()
    pipeline.produce_historical(3_000, start + 3 * MINUTE, MINUTE, seed=2)
    pipeline.wait_for_total(6_000, proc=proc, timeout=300)

    # PostgreSQL goes away while ratings keep arriving, then comes back.
    LocalPostgres(settings).stop(mode="immediate")
    pipeline.produce_historical(3_000, start + 6 * MINUTE, MINUTE, seed=3)
    time.sleep(12)
    assert proc.poll() is None, "the processor must wait for the database, not die"
    LocalPostgres(settings).start()
    pipeline.wait_for_total(9_000, proc=proc, timeout=300)

    request_stop(settings)
    assert proc.wait(120) == 0, open(proc.log_path).read()[-3000:]
    log = open(proc.log_path).read()
    assert "query stopped between batches" in log

    events = pipeline.raw_events()
    assert len(events) == 9_000
    assert pipeline.total_counted() == 9_000
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))


def test_a_postgres_pg_ctl_could_not_stop_is_an_error_not_reported_stopped(
    pipeline: Pipeline,
) -> None:
    """`down` must not say "postgres stopped" while it runs on: a failed pg_ctl is one line
    naming the data directory and pg_ctl's reason (an unknown shutdown mode here)."""
    postgres = LocalPostgres(pipeline.settings)
    with pytest.raises(CinestreamError, match=r"did not stop \(pg_ctl exit 1: .*bogus"):
        postgres.stop(mode="bogus")
    assert postgres.running()
    assert pipeline.db("SELECT 1") == [(1,)]
