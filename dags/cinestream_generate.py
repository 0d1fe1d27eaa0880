"""
### cinestream_generate
The live generator: latent-factor ratings into `ratings` through the Kafka provider's
`ProduceToTopicOperator` (asynchronous delivery, failures logged, no line per message), each
record stamped with its event time. `schedule="@continuous"` with one active run: each run
produces `rate` ratings/s (default `CINESTREAM_LIVE_RATE`) for `duration_s` (1h), then the next
run takes over. A run waits while a `cinestream_pipeline` run is queued or running, so a backlog
of past ratings is processed before live ones arrive. Trigger it with other Params for a one-off
(a count, a historical start and span); it queues behind the live run.
"""

from __future__ import annotations

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    START_DATE,
    SUPERVISED_ARGS,
    TAGS,
    generate_params,
    generate_task,
    wait_for_pipeline_task,
)
from cinestream.settings import Settings


@dag(
    dag_id="cinestream_generate",
    schedule="@continuous",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=TAGS,
    default_args=SUPERVISED_ARGS,
    doc_md=__doc__,
    params=generate_params(
        count=None, duration_s=3600, rate=Settings().live_rate or 20.0, seed=None
    ),
    render_template_as_native_obj=True,
)
def cinestream_generate() -> None:
    wait_for_pipeline_task() >> generate_task()


cinestream_generate()
