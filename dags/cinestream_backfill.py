"""
### cinestream_backfill

Hourly, with catchup: recomputes the windows of `[data_interval_start, data_interval_end)` from
Kafka with the batch job `spark_jobs/ratings_backfill.py` and replaces them in `window_metrics`
(and re-publishes them to `metrics`). Idempotent, so `airflow backfill create --dag-id
cinestream_backfill --from-date ... --to-date ...` over past days can be run any number of times.
"""

from __future__ import annotations

from airflow.sdk import dag
from airflow.timetables.interval import CronDataIntervalTimetable

from cinestream.orchestration.task_builders import DEFAULT_ARGS, START_DATE, TAGS, backfill_task


@dag(
    dag_id="cinestream_backfill",
    # Hour-long data intervals (a plain "@hourly" is a zero-length CronTriggerTimetable in 3.x).
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def cinestream_backfill() -> None:
    backfill_task()


cinestream_backfill()
