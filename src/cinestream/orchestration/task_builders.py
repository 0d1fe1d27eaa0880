"""Task builders shared by the DAGs in ``dags/`` (the DAG files only wire them).

Each task body is one call into :mod:`cinestream.orchestration.task_bodies`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, task

from cinestream.orchestration import task_bodies

# A fixed, past date for the DAGs that do not catch up (they run when triggered or on @continuous).
START_DATE = pendulum.datetime(2026, 11, 27, tz="UTC")
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "cinestream",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}
# A supervised long-running task (the live processor, the live generator): a crash is retried
# with back-off; a run whose retries are spent fails and @continuous starts the next run.
SUPERVISED_ARGS: dict[str, Any] = {
    **DEFAULT_ARGS,
    "retries": 5,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}
TAGS = ["cinestream"]
WINDOW_METRICS = Asset(name="window_metrics", uri=task_bodies.WINDOW_METRICS_ASSET)


# How far back a backfill created in the UI or the REST API may reach.
BACKFILL_START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def backfill_catchup_from() -> pendulum.DateTime:
    """Where the scheduler's catchup of the backfill starts: CINESTREAM_BACKFILL_CATCHUP before
    the stack's first start, on the hour (a fixed point, so every parse of the DAG agrees)."""
    from cinestream.local.secrets import first_start_time
    from cinestream.settings import Settings
    from cinestream.timeparse import parse_duration_ms

    settings = Settings()
    first = first_start_time(settings).timestamp()
    start = first - parse_duration_ms(settings.backfill_catchup) / 1000
    return pendulum.from_timestamp(start - start % 3600, tz="UTC")


def generate_params(
    *, count: int | None, duration_s: float | None, rate: float | None, seed: int | None
) -> dict[str, Param]:
    """The generator's Params, with the defaults of one DAG (a backlog or the live stream)."""
    return {
        "count": Param(
            count,
            type=["integer", "null"],
            minimum=1,
            description="Number of ratings (leave empty to use a duration).",
        ),
        "duration_s": Param(
            duration_s,
            type=["number", "null"],
            exclusiveMinimum=0,
            description="Produce for this many seconds instead of a count.",
        ),
        "rate": Param(
            rate,
            type=["number", "null"],
            exclusiveMinimum=0,
            description="Ratings per second (empty: as fast as possible).",
        ),
        "users": Param(5_000, type="integer", minimum=1),
        "movies": Param(10_000, type="integer", minimum=1),
        "seed": Param(
            seed, type=["integer", "null"], description="Random seed (empty: a new one per run)."
        ),
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


# A backlog: `make up` triggers cinestream_pipeline once with these (and a historical start).
GENERATE_PARAMS = generate_params(count=40_400, duration_s=None, rate=None, seed=42)


def stream_params(mode: str) -> dict[str, Param]:
    """The stream job's Params; ``mode`` is the default trigger."""
    from cinestream.settings import Settings

    settings = Settings()
    return {
        "mode": Param(
            mode,
            enum=["available-now", "continuous"],
            description="available-now drains what is new and exits; continuous runs "
            "micro-batches every `interval` until `max_duration`, then the run ends and the next "
            "one resumes from the checkpoint.",
        ),
        "interval": Param(
            settings.trigger_interval, type="string", description="Micro-batch interval."
        ),
        "max_duration": Param(
            settings.stream_run_duration,
            type="string",
            description="A continuous run stops gracefully after this.",
        ),
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
    """The ``ProduceToTopicOperator`` that writes generated ratings through the generator's
    connection (its principal may write the ratings topic only)."""
    from cinestream.orchestration.operators import RatingsProducerOperator
    from cinestream.settings import Settings

    return RatingsProducerOperator(
        task_id=task_id,
        kafka_config_id=task_bodies.GENERATOR_CONN_ID,
        topic=Settings().ratings_topic,
        producer_function="cinestream.orchestration.task_bodies.rating_messages",
        producer_function_kwargs={name: "{{ params." + name + " }}" for name in GENERATE_PARAMS},
        delivery_callback="cinestream.orchestration.task_bodies.on_delivery",
        synchronous=False,  # asynchronous delivery; one flush at the end
    )


def stream_task(
    task_id: str = "ratings_stream_processor",
    *,
    mode: str | None = None,
    on_busy: str = "fail",
    wait_for_lock_s: float = 0,
    execution_timeout: timedelta | None = None,
) -> Any:
    """The stream processor as a ``CinestreamSparkSubmitOperator`` that updates the asset; its
    task stops only its own processor. ``on_busy`` says what a run does when another processor
    holds the checkpoint after ``wait_for_lock_s``: fail (and retry), skip, or wait for that one
    to process what is in the topic."""
    from cinestream.orchestration.operators import CinestreamSparkSubmitOperator

    args = [
        "--trigger",
        mode or "{{ params.mode }}",
        "--interval",
        "{{ params.interval }}",
        "--max-duration",
        "{{ params.max_duration }}",
        "--wait-for-lock",
        str(wait_for_lock_s),
    ]
    return CinestreamSparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        outlets=[WINDOW_METRICS],
        own_stop_file=True,
        on_busy=on_busy,
        execution_timeout=execution_timeout,
        **task_bodies.spark_job_kwargs("ratings_stream_processor.py", args),
    )


def backfill_task(task_id: str = "ratings_backfill") -> Any:
    """The backfill job over the run's data interval, updating the asset. It reads the records
    stamped from CINESTREAM_BACKFILL_MARGIN before the interval (everything when the topic's
    timestamps cannot be trusted)."""
    from cinestream.orchestration.operators import CinestreamSparkSubmitOperator
    from cinestream.settings import Settings

    args = [
        "--start",
        "{{ data_interval_start.isoformat() }}",
        "--end",
        "{{ data_interval_end.isoformat() }}",
        "--lookback",
        Settings().backfill_margin,
    ]
    return CinestreamSparkSubmitOperator(
        task_id=task_id,
        conn_id="spark_default",
        outlets=[WINDOW_METRICS],
        **task_bodies.spark_job_kwargs("ratings_backfill.py", args),
    )


def wait_for_pipeline_task(task_id: str = "wait_for_pipeline_runs") -> Any:
    """A sensor that lets live generation start only when no cinestream_pipeline run is queued
    or running: a backlog of past event times is produced and processed before any live rating,
    so the stream's watermark does not pass it by and count it as late."""

    @task.sensor(task_id=task_id, poke_interval=15, timeout=3600, mode="reschedule")
    def wait(ti: Any = None) -> bool:
        return task_bodies.no_pipeline_run_active(ti)

    return wait()


def audit_catchup_from() -> pendulum.DateTime:
    """Where the daily audit's automatic catchup starts: the day of the backfill's catchup bound
    (CINESTREAM_BACKFILL_CATCHUP before the stack's first start), so the first automatic run
    audits the day the stack started in."""
    return backfill_catchup_from().start_of("day")


AUDIT_PARAMS: dict[str, Param] = {
    "start": Param(
        None,
        type=["string", "null"],
        description="Audit from this ISO-8601 time (with end; empty: the run's data interval).",
    ),
    "end": Param(
        None,
        type=["string", "null"],
        description="Audit up to this ISO-8601 time, exclusive.",
    ),
}


def audit_tasks(task_id: str = "audit") -> None:
    """audit -> a backfill of each differing range (one mapped task per range) -> re-audit."""
    from cinestream.orchestration import audit_tasks as bodies
    from cinestream.orchestration.operators import CinestreamSparkSubmitOperator
    from cinestream.settings import Settings

    def source(dag_run: Any) -> str:
        return f"{dag_run.dag_id}/{dag_run.run_id}"

    @task(task_id=task_id)
    def audit(
        params: dict[str, Any] | None = None,
        data_interval_start: Any = None,
        data_interval_end: Any = None,
        dag_run: Any = None,
    ) -> dict[str, Any]:
        return bodies.audit(params, data_interval_start, data_interval_end, source(dag_run))

    @task
    def backfill_arguments(result: dict[str, Any]) -> list[list[str]]:
        return bodies.backfill_arguments(result, Settings().backfill_margin)

    @task(trigger_rule="none_failed")
    def reaudit(result: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        return bodies.reaudit(result, source(dag_run))

    job = task_bodies.spark_job_kwargs("ratings_backfill.py", [])
    job.pop("application_args")
    result: Any = audit()  # an XComArg: the audit's result at run time
    arguments = backfill_arguments(result)
    backfill = CinestreamSparkSubmitOperator.partial(
        task_id="backfill_differing_hours",
        conn_id="spark_default",
        outlets=[WINDOW_METRICS],
        **job,
    ).expand(application_args=arguments)
    backfill >> reaudit(result)


def dlq_asset() -> Asset:
    """The ``ratings_dlq`` topic as an asset, watched in the triggerer by the Kafka provider's
    ``KafkaMessageQueueTrigger``: each burst of DLQ records is an asset event."""
    from airflow.providers.apache.kafka.triggers.msg_queue import KafkaMessageQueueTrigger
    from airflow.sdk import AssetWatcher

    from cinestream.orchestration import dlq_triage
    from cinestream.settings import Settings

    settings = Settings()
    trigger = KafkaMessageQueueTrigger(
        topics=[settings.dlq_topic],
        kafka_config_id=dlq_triage.DLQ_WATCH_CONN_ID,
        apply_function="cinestream.orchestration.dlq_triage.dlq_arrived",
        # The records of a burst after its first make no event: pass over them at once (the
        # provider sleeps poll_interval after each such record).
        poll_interval=0,
    )
    return Asset(
        name=settings.dlq_topic,
        uri=f"kafka://{settings.kafka_hosts[0]}/{settings.dlq_topic}",
        watchers=[AssetWatcher(name=f"{settings.dlq_topic}_watcher", trigger=trigger)],
    )


def dlq_task(task_id: str = "triage") -> Any:
    """The DLQ report of the records since the last one."""

    @task(task_id=task_id)
    def triage(triggering_asset_events: Any = None, dag_run: Any = None) -> dict[str, Any]:
        from cinestream.orchestration import dlq_triage

        return dlq_triage.triage(f"{dag_run.dag_id}/{dag_run.run_id}", triggering_asset_events)

    return triage()
