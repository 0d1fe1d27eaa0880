"""
### cinestream_stream

Runs `spark_jobs/ratings_stream_processor.py` with `SparkSubmitOperator` (connection
`spark_default`). Every 5 minutes an `available-now` run drains what is new and exits, so no
worker slot is held for hours. `mode=continuous` runs micro-batches every `interval` until
`max_duration`; stopping the task stops the query between batches. A run that finds another
processor on the checkpoint (the live one `make up` keeps) is skipped with that reason.
Updates the `window_metrics` asset, which schedules `cinestream_quality`.
"""

from __future__ import annotations

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    DEFAULT_ARGS,
    START_DATE,
    STREAM_PARAMS,
    TAGS,
    stream_task,
)


@dag(
    dag_id="cinestream_stream",
    schedule="*/5 * * * *",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params=STREAM_PARAMS,
)
def cinestream_stream() -> None:
    stream_task()


cinestream_stream()
