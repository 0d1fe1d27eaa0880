"""A private local stack for a benchmark: its own state dir and ports, wiped at start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def bench_stack(
    name: str, kafka_port: int, pg_port: int, profile: str = "single", **extra_env: str
) -> Iterator[Path]:
    """Start PostgreSQL and Kafka under ``.state-<name>`` and stop them afterwards; with
    ``profile="cluster"`` three SASL brokers and the Spark standalone master and workers (its
    port set by CINESTREAM_SPARK_MASTER in ``extra_env``)."""
    state = REPO / f".state-{name}"
    os.environ.update(
        {
            "CINESTREAM_STATE_DIR": str(state),
            "CINESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "CINESTREAM_PG_PORT": str(pg_port),
            "CINESTREAM_PROFILE": profile,
            **extra_env,
        }
    )
    from cinestream.kafka import admin
    from cinestream.local.kafka_nodes import LocalKafka
    from cinestream.local.postgres import LocalPostgres
    from cinestream.local.spark import LocalSpark
    from cinestream.settings import Settings
    from cinestream.store import schema
    from cinestream.store.connection import connect

    settings = Settings()
    spark = LocalSpark(settings) if settings.cluster else None
    if spark:
        spark.stop()
    LocalKafka(settings).stop()
    LocalPostgres(settings).stop(mode="immediate")
    shutil.rmtree(state, ignore_errors=True)
    LocalPostgres(settings).start()
    LocalKafka(settings).start()
    if spark:
        spark.start()
    try:
        admin.create_topics(settings)
        with connect(settings.resolved_database_url) as conn:
            schema.ensure_schema(conn)
        yield state
    finally:
        if spark:
            spark.stop()
        LocalKafka(settings).stop()
        LocalPostgres(settings).stop()


@contextmanager
def serve_api(state: Path, port: int) -> Iterator[str]:
    """``cinestream api`` on ``port`` (its log in ``state/api.log``) until the block ends."""
    log = (state / "api.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "cinestream.cli", "api", "--port", str(port)],
        env=os.environ.copy(),
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/metrics/health", timeout=1).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise SystemExit(f"the API did not answer on {base}; see {log.name}")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()
