"""Task builders shared by the DAGs in ``dags/`` (the DAG files only wire them).

Each task body is one call into :mod:`cinestream.orchestration.task_bodies`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, task

from cinestream.orchestration import task_bodies

START_DATE = pendulum.datetime(2026, 11, 27, tz="UTC")
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "cinestream",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}
TAGS = ["cinestream"]
WINDOW_METRICS = Asset(name="window_metrics", uri=task_bodies.WINDOW_METRICS_ASSET)

GENERATE_PARAMS = {
    "count": Param(
        40_400,
        type=["integer", "null"],
        minimum=1,
        description="Number of ratings (leave empty to use a duration).",
    ),
    "duration_s": Param(
        None,
        type=["number", "null"],
        exclusiveMinimum=0,
        description="Produce for this many seconds instead of a count.",
    ),
    "rate": Param(
        None,
        type=["number", "null"],
        exclusiveMinimum=0,
        description="Ratings per second (empty: as fast as possible).",
    ),
    "users": Param(5_000, type="integer", minimum=1),
    "movies": Param(10_000, type="integer", minimum=1),
    "seed": Param(42, type="integer"),
    "start": Param(
        None,
        type=["string", "null"],
        description="Historical event times from this ISO-8601 instant.",
    ),
    "span_s": Param(
        None,
        type=["number", "null"],
        exclusiveMinimum=0,
        description="Spread historical event times over this many seconds.",
    ),
}
STREAM_PARAMS = {
    "mode": Param(
        "available-now",
        enum=["available-now", "continuous"],
        description="available-now drains what is new and exits; continuous runs "
        "micro-batches every `interval` until `max_duration`.",
    ),
    "interval": Param("10s", type="string", description="Micro-batch interval (continuous)."),
    "max_duration": Param("30min", type="string", description="Stop gracefully after this."),
}


def setup_tasks(clear_checkpoint_param: str = "clear_checkpoint") -> tuple[Any, Any]:
    """check broker -> create topics -> (clear checkpoint) -> preflight; returns (first, last)."""

    @task
    def check_broker() -> dict[str, Any]:
        return task_bodies.check_broker("kafka_default")

    @task
    def create_topics() -> list[str]:
        return task_bodies.create_topics("kafka_default")

    @task
    def clear_checkpoint(params: dict[str, Any] | None = None) -> str:
        return task_bodies.clear_checkpoint(bool((params or {}).get(clear_checkpoint_param)))

    @task
    def preflight() -> str:
        return task_bodies.preflight()

    first = check_broker()
    last = preflight()
    first >> create_topics() >> clear_checkpoint() >> last
    return first, last


def generate_task(task_id: str = "produce_ratings") -> Any:
    """The ``ProduceToTopicOperator`` that writes generated ratings through ``kafka_default``."""
    from airflow.providers.apache.kafka.operators.produce import ProduceToTopicOperator

    from cinestream.settings import Settings

    return ProduceToTopicOperator(
        task_id=task_id,
        kafka_config_id="kafka_default",
        topic=Settings().ratings_topic,
        producer_function="cinestream.orchestration.task_bodies.rating_messages",
        producer_function_kwargs={name: "{{ params." + name + " }}" for name in GENERATE_PARAMS},
        delivery_callback="cinestream.orchestration.task_bodies.on_delivery",
        synchronous=False,  # asynchronous delivery; one flush at the end
    )


def stream_task(task_id: str = "ratings_stream_processor", *, mode: str | None = None) -> Any:
    """The stream processor as a ``CinestreamSparkSubmitOperator`` that updates the asset."""
    from cinestream_spark import CinestreamSparkSubmitOperator

    args = [
        "--trigger",
        mode or "{{ params.mode }}",
        "--interval",
        "{{ params.interval }}",
        "--max-duration",
        "{{ params.max_duration }}",
    ]
    return CinestreamSparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        outlets=[WINDOW_METRICS],
        **task_bodies.spark_job_kwargs("ratings_stream_processor.py", args),
    )


def backfill_task(task_id: str = "ratings_backfill") -> Any:
    """The backfill job over the run's data interval, updating the asset."""
    from cinestream_spark import CinestreamSparkSubmitOperator

    args = [
        "--start",
        "{{ data_interval_start.isoformat() }}",
        "--end",
        "{{ data_interval_end.isoformat() }}",
        "--lookback",
        "all",
    ]
    return CinestreamSparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        outlets=[WINDOW_METRICS],
        **task_bodies.spark_job_kwargs("ratings_backfill.py", args),
    )
