"""
### cinestream_backfill

Hourly, with catchup: recomputes the windows of `[data_interval_start, data_interval_end)` from
Kafka with the batch job `spark_jobs/ratings_backfill.py` and replaces them in `window_metrics`
(and re-publishes them to `metrics`). Idempotent, so `airflow backfill create --dag-id
cinestream_backfill --from-date ... --to-date ...` (or a backfill created in the UI) over past
days can be run any number of times. Catchup reaches `CINESTREAM_BACKFILL_CATCHUP` (3h) before the
stack's first start. Each run reads only the records stamped from `CINESTREAM_BACKFILL_MARGIN`
(15min) before its hour, found by timestamp; when the topic's record timestamps do not follow the
events' time it reads the whole topic and says so in its log.
"""

from __future__ import annotations

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    BACKFILL_START_DATE,
    DEFAULT_ARGS,
    TAGS,
    backfill_catchup_from,
    backfill_task,
)
from cinestream.orchestration.timetables import CatchupBoundedCronTimetable


@dag(
    dag_id="cinestream_backfill",
    # Hour-long data intervals (a plain "@hourly" is a zero-length CronTriggerTimetable in 3.x);
    # the scheduler's catchup starts CINESTREAM_BACKFILL_CATCHUP (3h) before the stack's first
    # start, while backfills created in the UI or the REST API reach back to the start date.
    schedule=CatchupBoundedCronTimetable("0 * * * *", "UTC", backfill_catchup_from()),
    start_date=BACKFILL_START_DATE,
    catchup=True,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def cinestream_backfill() -> None:
    backfill_task()


cinestream_backfill()
