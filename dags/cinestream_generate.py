"""
### cinestream_generate

Produces latent-factor ratings into `ratings` through the Kafka provider's
`ProduceToTopicOperator` (asynchronous delivery, failures logged, no line per message).
Params: a count or a duration, a rate, users, movies, seed, and a historical start and span.
"""

from __future__ import annotations

from airflow.sdk import dag

from cinestream.orchestration.task_builders import (
    DEFAULT_ARGS,
    GENERATE_PARAMS,
    START_DATE,
    TAGS,
    generate_task,
)


@dag(
    dag_id="cinestream_generate",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=TAGS,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    params=GENERATE_PARAMS,
    render_template_as_native_obj=True,
)
def cinestream_generate() -> None:
    generate_task()


cinestream_generate()
