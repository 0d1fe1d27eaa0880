"""
### cinestream_pipeline

End to end, once: setup (broker, topics, preflight) -> generate (40,400 ratings by default;
`make up` triggers it once on a fresh stack with event times over the last 40 minutes) -> stream
-> quality (the Great Expectations suites). The stream step is one `available-now` run; when the
live processor of `cinestream_stream` holds the checkpoint, the step waits until that processor
has committed everything the generate step wrote instead. Live generation
(`cinestream_generate`) waits while a pipeline run is active, so the backlog comes first.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cinestream.orchestration.task_builders import (
    DEFAULT_ARGS,
    GENERATE_PARAMS,
    START_DATE,
    TAGS,
    generate_task,
    setup_tasks,
    stream_params,
    stream_task,
)


@dag(
    dag_id="cinestream_pipeline",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params={
        **GENERATE_PARAMS,
        **stream_params("available-now"),
        "clear_checkpoint": Param(False, type="boolean"),
    },
    render_template_as_native_obj=True,
)
def cinestream_pipeline() -> None:
    @task
    def quality() -> dict:
        from cinestream.orchestration import task_bodies

        return task_bodies.run_quality()

    _, setup_done = setup_tasks()
    setup_done >> generate_task() >> stream_task(mode="available-now", on_busy="wait") >> quality()


cinestream_pipeline()
