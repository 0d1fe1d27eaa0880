"""The shared test stack (a Kafka KRaft broker and PostgreSQL) and the Pipeline helper.

A plain module, not a conftest: tests/conftest.py registers its ``stack`` and ``pipeline``
fixtures once for every directory, so that tests/integration and tests/dags run on ONE
session-scoped stack (a conftest that imported them again would register a second session
fixture, and the first DAG test would stop, wipe and restart the stack). The test stack uses its
own state dir and ports, so it never touches a stack `make up` started. Each test gets its own
topics and checkpoint and an empty window store.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import spark_cds

REPO = Path(__file__).resolve().parents[1]
# CINESTREAM_TEST_SLOT=N (default 0) runs a second test stack beside the first, with its own
# state dir and ports (+10 per slot), so two checkouts or developers can test on one machine.
# Under pytest-xdist (`make test` runs the service tiers on three workers) worker gwK takes slot
# N + K: one stack per worker, shared by every test that worker runs.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_SLOT = int(os.environ.get("CINESTREAM_TEST_SLOT", "0") or 0) + int(_WORKER.removeprefix("gw"))
TEST_STATE = REPO / (".state-test" if _SLOT == 0 else f".state-test-slot{_SLOT}")
BASE_ENV = {
    "CINESTREAM_STATE_DIR": str(TEST_STATE),
    "CINESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{19092 + 10 * _SLOT}",
    "CINESTREAM_PG_PORT": str(15432 + 10 * _SLOT),
}
_counter = itertools.count(1)
# Every Spark driver a test starts (spark-submit, the local SparkSession, Airflow's jobs) compiles
# with C1 only (tests/conftest.py puts it in the environment). A test's job lives seconds over
# small data, so C2's compiler threads are cost that never pays off: an available-now drain of
# 20,000 ratings took 22.3 s of user CPU with the default tiers and 12.5 s with C1 only
# (2026-12-01, this machine), and three test workers share two cores. What a job computes does
# not depend on the JIT; the product's jobs keep the JVM's default. They also map the classes of
# Spark from the archive `make test` makes first, when it is there, and so do the executors the
# cluster profile starts for them (tests/spark_cds.py).
SPARK_SUBMIT_OPTS = spark_cds.submit_opts()


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    from cinestream.local.kafka_nodes import LocalKafka
    from cinestream.local.postgres import LocalPostgres
    from cinestream.local.processes import ManagedProcess
    from cinestream.settings import Settings
    from tests.warm_driver import WarmDriver

    old = {k: os.environ.get(k) for k in BASE_ENV}
    os.environ.update(BASE_ENV)
    settings = Settings()
    # A previous run that died may have left servers behind: stop them before wiping.
    LocalKafka(settings).stop()
    LocalPostgres(settings).stop(mode="immediate")
    for name in ("processor", "generator"):
        ManagedProcess(name, settings).stop()
    WarmDriver(TEST_STATE / "warm-driver").stop_leftover()
    shutil.rmtree(TEST_STATE, ignore_errors=True)
    LocalPostgres(settings).start()
    LocalKafka(settings).start()
    try:
        yield dict(BASE_ENV)
    finally:
        LocalKafka(settings).stop()
        LocalPostgres(settings).stop(mode="immediate")
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def warm_driver(stack: dict[str, str]) -> Iterator[Path | None]:
    """The spark-submit client of this worker's warm driver (tests/warm_driver.py says why);
    None when it did not start (the tests then run every job cold, and say so once)."""
    import warnings

    from tests.warm_driver import WarmDriver

    driver = WarmDriver(TEST_STATE / "warm-driver")
    try:
        driver.start()
    except RuntimeError as exc:
        warnings.warn(f"{exc}: every Spark job of these tests runs cold", stacklevel=1)
        yield None
        return
    try:
        yield driver.client
    finally:
        driver.stop()


class Pipeline:
    """One test's topics, checkpoint and helpers to drive the real pipeline."""

    def __init__(self, env: dict[str, str], spark_submit: Path | None = None) -> None:
        from cinestream.settings import Settings

        self.env = env
        self.settings = Settings()
        # Foreground jobs (``cli``) run in the worker's warm driver when they can; background
        # ones (``start_cli``, which tests kill) always in a spark-submit of their own.
        self.foreground_env = {"CINESTREAM_SPARK_SUBMIT": str(spark_submit)} if spark_submit else {}

    # --- producing ------------------------------------------------------------------------
    def produce_historical(self, count: int, start_ms: int, span_ms: int, seed: int = 7) -> Any:
        from cinestream.generator import ModelParams, generate

        report = generate(
            kafka=self.settings.kafka_client_config,
            topic=self.settings.ratings_topic,
            params=ModelParams(seed=seed),
            count=count,
            start_ms=start_ms,
            span_ms=span_ms,
            progress=False,
        )
        assert report.delivered == count and report.failed == 0, report.as_dict()
        return report

    def produce_raw(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        from confluent_kafka import Producer

        producer = Producer({**self.settings.kafka_client_config, "enable.idempotence": True})
        for key, value in records:
            producer.produce(self.settings.ratings_topic, value, key)
        assert producer.flush(30) == 0

    # --- running the jobs -----------------------------------------------------------------
    def cli(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cinestream ARGS``; stdout holds everything (Spark merges the driver's stderr)."""
        result = subprocess.run(
            [sys.executable, "-m", "cinestream.cli", *args],
            env={**os.environ, **self.env, **self.foreground_env, **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, (
                f"{args}: rc={result.returncode}\n{result.stdout[-4000:]}"
            )
        return result

    def expect_checkpoint_mismatch(
        self, result: subprocess.CompletedProcess[str], *phrases: str
    ) -> str:
        """The processor stopped with exit 3 and one error line holding ``phrases`` and the fix,
        and ``doctor`` FAILs on the checkpoint with the first phrase; returns the error line."""
        assert result.returncode == 3, result.stdout[-3000:]
        (error,) = [line for line in result.stdout.splitlines() if line.startswith("error: ")]
        for phrase in (*phrases, "cinestream reset --checkpoint-only"):
            assert phrase in error, (phrase, error)
        doctor = self.cli("doctor")
        assert doctor.returncode == 1
        assert any(
            x.startswith("FAIL checkpoint") and phrases[0] in x for x in doctor.stdout.splitlines()
        ), doctor.stdout
        return error

    def process(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cli("process", "--trigger", "available-now", *args, **kwargs)

    def start_cli(
        self, *args: str, extra_env: dict[str, str] | None = None, log_name: str = "bg"
    ) -> subprocess.Popen[bytes]:
        log_path = TEST_STATE / "logs" / f"{log_name}-{next(_counter)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only, like every log the stack writes (test_state_modes checks the state dir).
        out = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cinestream.cli", *args],
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc

    # --- reading results ------------------------------------------------------------------
    def db(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.settings.resolved_database_url) as conn:
            return conn.execute(sql, params).fetchall()

    def db_windows(self, window_type: str = "tumbling_1min") -> dict[str, dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        from cinestream.schemas import metric_record

        with psycopg.connect(self.settings.resolved_database_url, row_factory=dict_row) as conn:
            rows = conn.execute(
                "SELECT * FROM window_metrics WHERE window_type = %s ORDER BY window_start",
                (window_type,),
            ).fetchall()
        return {r["window_start"]: r for r in (metric_record(row) for row in rows)}

    def topic_windows(self) -> dict[str, dict[str, Any]]:
        """Last metric record per key in the metrics topic, keyed by window_start."""
        import json

        from cinestream.kafka.read import read_all

        latest: dict[str, dict[str, Any]] = {}
        for msg in read_all(self.settings, self.settings.metrics_topic):
            record = json.loads(msg.value())
            assert msg.key().decode() == f"{record['window_type']}|{record['window_start']}"
            latest[record["window_start"]] = record
        return latest

    def raw_events(self) -> list[tuple[int, int, float, int]]:
        from cinestream.kafka.read import read_all
        from tests.reference import events_from_messages

        return events_from_messages(read_all(self.settings, self.settings.ratings_topic))

    def total_counted(self) -> int:
        return int(
            self.db(
                "SELECT coalesce(sum(count), 0) FROM window_metrics "
                "WHERE window_type = 'tumbling_1min'"
            )[0][0]
        )

    def wait_for_total(
        self, expected: int, timeout: float = 180, proc: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        total = -1
        while time.monotonic() < deadline:
            try:
                total = self.total_counted()
            except Exception:  # the database may be down on purpose
                total = -1
            if total == expected:
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(1)
        log = Path(proc.log_path).read_text()[-3000:] if proc is not None else ""  # type: ignore[attr-defined]
        raise AssertionError(f"total {total} != {expected} after {timeout}s\n{log}")


def assert_windows_equal(
    actual: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]
) -> None:
    assert sorted(actual) == sorted(expected)
    for start, want in expected.items():
        got = actual[start]
        for field, value in want.items():
            if field == "avg_rating":
                assert got[field] == pytest.approx(value, rel=1e-12), (start, field)
            else:
                assert got[field] == value, (start, field, got[field], value)


@pytest.fixture
def pipeline(
    stack: dict[str, str],
    warm_driver: Path | None,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    from cinestream.kafka import admin
    from cinestream.settings import Settings
    from cinestream.store import schema
    from cinestream.store.connection import connect

    name = f"t{next(_counter)}_{request.node.name[5:25]}".replace("[", "_").replace("]", "")
    env = {
        **stack,
        "CINESTREAM_RATINGS_TOPIC": f"{name}_ratings",
        "CINESTREAM_METRICS_TOPIC": f"{name}_metrics",
        "CINESTREAM_DLQ_TOPIC": f"{name}_dlq",
        "CINESTREAM_CHECKPOINT_DIR": (TEST_STATE / "checkpoints" / name).as_uri(),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    admin.create_topics(settings)
    with connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        schema.truncate_all(conn)
    yield Pipeline(env, warm_driver)
