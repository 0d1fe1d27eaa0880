"""A private local stack for a benchmark: its own state dir and ports, wiped at start."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    from cinestream.local.kafka import LocalKafka
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
