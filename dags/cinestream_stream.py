"""
### cinestream_stream
Keeps the live stream processor running: `spark_jobs/ratings_stream_processor.py` through
`SparkSubmitOperator` (connection `spark_default`), `schedule="@continuous"` with one active run.
Each run is a continuous processor (a micro-batch every `interval`) that stops gracefully after
`max_duration` (default `CINESTREAM_STREAM_RUN_DURATION`, 1h); the next run resumes from the
checkpoint. A crash is retried with exponential back-off; stopping the task (mark it failed or
success) stops only its own processor, between batches. A run that finds another processor on
the checkpoint queues for its lock for up to 15 minutes, then fails and is retried.
`mode=available-now` makes each run drain what is new and exit instead.
Updates the `window_metrics` asset, which schedules `cinestream_quality`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    START_DATE,
    SUPERVISED_ARGS,
    TAGS,
    stream_params,
    stream_task,
)


@dag(
    dag_id="cinestream_stream",
    schedule="@continuous",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=TAGS,
    default_args=SUPERVISED_ARGS,
    doc_md=__doc__,
    params=stream_params("continuous"),
)
def cinestream_stream() -> None:
    stream_task(wait_for_lock_s=900, on_busy="fail", execution_timeout=timedelta(hours=6))


cinestream_stream()
