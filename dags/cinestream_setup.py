"""
### cinestream_setup

Checks the Kafka broker (connection `kafka_default`), creates `ratings` (3 partitions), `metrics`
(compacted) and `ratings_dlq`, optionally clears the processor checkpoint, and runs a preflight
that fails with `cinestream doctor`'s explanation when the processor would skip data (a
checkpoint from a deleted topic, `latest` over a backlog).
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from cinestream.orchestration.task_builders import DEFAULT_ARGS, START_DATE, TAGS, setup_tasks


@dag(
    dag_id="cinestream_setup",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    is_paused_upon_creation=False,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params={
        "clear_checkpoint": Param(
            False, type="boolean", description="Wipe the checkpoint and derived windows first."
        ),
    },
)
def cinestream_setup() -> None:
    setup_tasks()


cinestream_setup()
