"""
### cinestream_quality

Runs the Great Expectations suites (`expectations/`: window_metrics, metrics_topic, continuity,
ratings) over the windows just written, whenever `cinestream_stream` or `cinestream_backfill`
updates the `window_metrics` asset: the asset events name the event-time range of the windows
each run changed, and the suites validate that range (every window when triggered by hand).
A failed expectation fails the task, with each failure and its observed value in the log. The
Data Docs are one click away: *Browse -> Data quality (cinestream)*.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from cinestream.orchestration.task_builders import DEFAULT_ARGS, START_DATE, TAGS, WINDOW_METRICS


@dag(
    dag_id="cinestream_quality",
    schedule=[WINDOW_METRICS],
    start_date=START_DATE,
    catchup=False,
    is_paused_upon_creation=False,
    tags=[*TAGS, "data-quality"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def cinestream_quality() -> None:
    @task
    def validate(triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from cinestream.orchestration import task_bodies

        return task_bodies.run_quality_for_events(triggering_asset_events)

    validate()


cinestream_quality()
