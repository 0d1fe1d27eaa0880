"""
### cinestream_dlq

Runs when invalid records arrive in `ratings_dlq`: an asset watcher in the triggerer (the Kafka
provider's `KafkaMessageQueueTrigger`, connection `cinestream_dlq_watch`) turns each burst into
an asset event; also hourly, so a quiet hour is reported too. It reads the DLQ from where the
previous report ended, groups the records by reason and producer key, records the report
(`dlq_reports`, shown in *Browse -> Data quality (cinestream)*), and marks the platform degraded
(`/metrics/health`, the dashboard) when invalid records exceed `CINESTREAM_DLQ_DEGRADED_SHARE`
of the traffic over the last hour's reports.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag

from cinestream.orchestration.task_builders import (
    DEFAULT_ARGS,
    START_DATE,
    TAGS,
    dlq_asset,
    dlq_task,
)


@dag(
    dag_id="cinestream_dlq",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=[dlq_asset()]
    ),
    start_date=START_DATE,
    catchup=False,
    # One report at a time: each starts where the previous one ended.
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=[*TAGS, "data-quality"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def cinestream_dlq() -> None:
    dlq_task()


cinestream_dlq()
