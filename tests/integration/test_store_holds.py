"""Exact on the paths users take (issue 19): history months old in small batches, a moved
checkpoint, a store of another topic, a recreated topic kept, a new database, retention."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from cinestream.kafka import admin
from cinestream.local.secrets import local_db_password
from cinestream.store.schema import SUPERUSER
from tests.integration.conftest import TEST_STATE, Pipeline, assert_windows_equal
from tests.reference import recompute

pytestmark = pytest.mark.integration

MINUTE = 60_000
DAY = 24 * 60 * MINUTE


def _error_line(output: str) -> str:
    (line,) = [x for x in output.splitlines() if x.startswith("error: ")]
    return line


def _exact(pipeline: Pipeline, expected_total: int) -> None:
    """Every window, in PostgreSQL and as the last record per key in ``metrics``, equals the
    recomputation from the raw events; their sum is ``expected_total``."""
    events = pipeline.raw_events()
    assert len(events) == expected_total
    assert pipeline.total_counted() == expected_total
    assert_windows_equal(pipeline.db_windows(), recompute(events))
    assert_windows_equal(pipeline.topic_windows(), recompute(events))


def test_history_months_old_in_small_batches_is_exact(pipeline: Pipeline) -> None:
    # Record timestamps are event times: time retention would delete such a topic at once.
    from confluent_kafka.admin import AdminClient, ConfigResource

    resource = ConfigResource("topic", pipeline.settings.ratings_topic)
    client = AdminClient({"bootstrap.servers": pipeline.settings.kafka_bootstrap})
    configs = client.describe_configs([resource])[resource].result(30)
    assert configs["retention.ms"].value == "-1"
    # Event times 90 days back: every window is older than CINESTREAM_RETENTION (3 days) while the
    # drain is still filling it. Pruning (which runs after the first batch) used to drop the
    # detail of such a window, and the next batch rebuilt it from zero: one window short.
    start = (int(time.time() * 1000) // MINUTE - 90 * 24 * 60) * MINUTE
    pipeline.produce_historical(6_000, start, 6 * MINUTE, seed=11)
    run = pipeline.process(extra_env={"CINESTREAM_MAX_OFFSETS_PER_TRIGGER": "700"}, check=True)
    assert "batch 7:" in run.stdout, run.stdout[-3000:]
    _exact(pipeline, 6_000)


def test_a_moved_checkpoint_resumes_from_the_store_and_counts_nothing_twice(
    pipeline: Pipeline,
) -> None:
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(1_000, start, 3 * MINUTE, seed=1)
    pipeline.process(check=True)
    old = pipeline.settings.checkpoint_dir
    moved = {"CINESTREAM_CHECKPOINT_DIR": (TEST_STATE / "moved" / Path(old).name).as_uri()}

    # The same topic again through another checkpoint: nothing new, nothing doubled.
    again = pipeline.process(extra_env=moved, check=True)
    assert (
        "the store already holds topic" in again.stdout
        and "processor resumes there" in again.stdout
    )
    _exact(pipeline, 1_000)

    pipeline.produce_historical(500, start + 3 * MINUTE, 2 * MINUTE, seed=2)
    pipeline.process(extra_env=moved, check=True)
    _exact(pipeline, 1_500)

    # Back to the old checkpoint: it is behind the store now; refused, with the fix that keeps
    # every window.
    stale = pipeline.process()
    assert stale.returncode == 3, stale.stdout[-3000:]
    error = _error_line(stale.stdout)
    assert "checkpoint is behind the store" in error and "reset --checkpoint-only" in error
    pipeline.cli("reset", "--yes", "--checkpoint-only", check=True)
    pipeline.produce_historical(200, start + 5 * MINUTE, MINUTE, seed=3)
    pipeline.process(check=True)
    _exact(pipeline, 1_700)


def test_a_store_of_another_topic_is_refused_in_one_line(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(300, start, MINUTE, seed=4)
    pipeline.process(check=True)
    other = {
        "CINESTREAM_RATINGS_TOPIC": pipeline.settings.ratings_topic + "_b",
        "CINESTREAM_METRICS_TOPIC": pipeline.settings.metrics_topic + "_b",
        "CINESTREAM_DLQ_TOPIC": pipeline.settings.dlq_topic + "_b",
        "CINESTREAM_CHECKPOINT_DIR": pipeline.settings.checkpoint_dir + "_b",
    }
    pipeline.cli("topics", "create", extra_env=other, check=True)
    result = pipeline.process(extra_env=other)
    assert result.returncode == 3, result.stdout[-3000:]
    error = _error_line(result.stdout)
    assert (
        f"'{pipeline.settings.ratings_topic}'" in error
        and f"{other['CINESTREAM_RATINGS_TOPIC']!r}" in error
    )
    assert "CINESTREAM_DATABASE_URL" in error
    assert pipeline.total_counted() == 300


def test_a_recreated_topic_can_be_counted_into_the_kept_windows(pipeline: Pipeline) -> None:
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(800, start, 2 * MINUTE, seed=5)
    pipeline.process(check=True)
    before = pipeline.db_windows()
    admin.delete_topics(pipeline.settings)
    admin.create_topics(pipeline.settings)
    pipeline.produce_historical(300, start + 10 * MINUTE, MINUTE, seed=6)
    refused = pipeline.process()
    assert refused.returncode == 3
    assert "deleted and recreated" in _error_line(refused.stdout)

    reset = pipeline.cli("reset", "--yes", "--checkpoint-only", check=True)
    assert "keeps every window" in reset.stdout
    pipeline.process(check=True)
    assert pipeline.total_counted() == 1_100
    after = pipeline.db_windows()
    for window_start, row in before.items():  # the old topic's windows, which Kafka lost
        assert after[window_start]["count"] == row["count"]
    new = {k: v for k, v in after.items() if k not in before}
    assert_windows_equal(new, recompute(pipeline.raw_events()))


def test_records_deleted_before_they_were_counted_are_named_and_skipped_only_when_accepted(
    pipeline: Pipeline,
) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(600, start, 2 * MINUTE, seed=7)
    pipeline.process(check=True)
    pipeline.produce_historical(300, start + 3 * MINUTE, MINUTE, seed=8)
    # Retention deletes everything produced so far, before the second batch was processed.
    ends = {
        p.partition: p.high
        for p in admin.partition_offsets(pipeline.settings, pipeline.settings.ratings_topic)
    }
    client = AdminClient({"bootstrap.servers": pipeline.settings.kafka_bootstrap})
    futures = client.delete_records(
        [TopicPartition(pipeline.settings.ratings_topic, p, o) for p, o in ends.items()]
    )
    for future in futures.values():
        future.result(30)
    refused = pipeline.process()
    assert refused.returncode == 3, refused.stdout[-3000:]
    error = _error_line(refused.stdout)
    assert "were deleted (retention) before they were processed" in error
    assert "--accept-deleted" in error
    assert pipeline.total_counted() == 600

    accepted = pipeline.cli("reset", "--yes", "--checkpoint-only", "--accept-deleted", check=True)
    assert "were deleted by Kafka before they were counted" in accepted.stdout
    pipeline.produce_historical(100, start + 5 * MINUTE, MINUTE, seed=9)
    pipeline.process(check=True)
    assert pipeline.total_counted() == 700  # the 300 Kafka deleted are named, not counted


def test_every_command_works_on_a_new_empty_database(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    port = urlsplit(settings.resolved_database_url).port
    password = local_db_password(settings.state_dir, role=SUPERUSER)
    name = "fresh_" + settings.ratings_topic.lower()
    admin_url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} OWNER cinestream")
    url = settings.resolved_database_url.rsplit("/", 1)[0] + f"/{name}"
    fresh = {"CINESTREAM_DATABASE_URL": url}
    start = (int(time.time() * 1000) // MINUTE - 120) * MINUTE
    pipeline.produce_historical(400, start, MINUTE, seed=10)
    try:
        for args in (
            ("doctor",),
            ("validate",),
            ("backfill", "--start", "2025-01-01T00:00:00Z", "--end", "2025-01-01T01:00:00Z"),
        ):
            result = pipeline.cli(*args, extra_env=fresh)
            assert "Traceback" not in result.stdout and "does not exist" not in result.stdout, (
                args,
                result.stdout[-2000:],
            )
        run = pipeline.process(extra_env=fresh, check=True)
        assert "Traceback" not in run.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT sum(count) FROM window_metrics").fetchone() == (400,)
            (offsets,) = conn.execute("SELECT end_offsets FROM pipeline").fetchone()
        assert sum(json.loads(json.dumps(offsets)).values()) == 400
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
