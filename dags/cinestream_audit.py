"""
### cinestream_audit

Daily for the previous day (catchup bounded like `cinestream_backfill`'s, from the day of its
bound), and on demand with the Params `start` and `end` (ISO-8601): recomputes every window of
the range from `ratings` with `cinestream audit`'s independent path (plain Kafka reads, no
Spark) and compares it with PostgreSQL and the `metrics` topic. The result is recorded
(`audit_runs`) and shown in *Browse -> Data quality (cinestream)* with the differing windows.
When windows differ, the backfill job replaces exactly the hours that hold them (one mapped task
per stretch of hours) and those hours are audited again; the run fails if they still differ.

What a backfill cannot repair is not backfilled, and the run ends failed with one line naming
those windows and why: a window still open (the daily run first waits, up to 3 minutes past the
allowed lateness, for the stream's watermark to close the day), a window where PostgreSQL holds
more ratings than the topic still has (retention), a window only the `metrics` topic has.
"""

from __future__ import annotations

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    AUDIT_PARAMS,
    BACKFILL_START_DATE,
    DEFAULT_ARGS,
    TAGS,
    audit_catchup_from,
    audit_tasks,
)
from cinestream.orchestration.timetables import CatchupBoundedCronTimetable


@dag(
    dag_id="cinestream_audit",
    # Day-long data intervals: the previous day, run just after midnight UTC.
    schedule=CatchupBoundedCronTimetable("0 0 * * *", "UTC", audit_catchup_from()),
    start_date=BACKFILL_START_DATE,
    catchup=True,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=[*TAGS, "data-quality"],
    default_args=DEFAULT_ARGS,
    params=AUDIT_PARAMS,
    doc_md=__doc__,
)
def cinestream_audit() -> None:
    audit_tasks()


cinestream_audit()
