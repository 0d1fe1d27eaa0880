"""
### cinestream_reset

The seed's full restart: stops the processor, deletes the topics and waits until they are gone,
recreates them, wipes the checkpoint and empties `window_metrics` and the window store.
Guarded: the Param `confirm` must be `RESET`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from cinestream.orchestration import task_bodies
from cinestream.orchestration.task_builders import DEFAULT_ARGS, START_DATE, TAGS


@dag(
    dag_id="cinestream_reset",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    is_paused_upon_creation=False,
    tags=TAGS,
    default_args={**DEFAULT_ARGS, "retries": 0},
    doc_md=__doc__,
    params={"confirm": Param("", type="string", description="Type RESET to confirm.")},
)
def cinestream_reset() -> None:
    @task
    def reset(params: dict | None = None) -> list[str]:
        return task_bodies.reset_all((params or {}).get("confirm", ""))

    reset()


cinestream_reset()
