"""
### cinestream_pipeline

End to end, once: setup (broker, topics, preflight) -> generate (Params as in
`cinestream_generate`, 40,400 ratings by default) -> stream (one `available-now` run) ->
quality (the Great Expectations suites). `make up` triggers it once so a newcomer sees windows
within minutes.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cinestream.orchestration.task_builders import (
    DEFAULT_ARGS,
    GENERATE_PARAMS,
    START_DATE,
    STREAM_PARAMS,
    TAGS,
    generate_task,
    setup_tasks,
    stream_task,
)


@dag(
    dag_id="cinestream_pipeline",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params={
        **GENERATE_PARAMS,
        **STREAM_PARAMS,
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
    setup_done >> generate_task() >> stream_task(mode="available-now") >> quality()


cinestream_pipeline()
