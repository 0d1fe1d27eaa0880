"""What Airflow needs beyond the providers for cinestream's Spark jobs.

``CinestreamSparkSubmitOperator`` is the provider's SparkSubmitOperator with two behaviours the
stream processor needs: stopping the task asks the query to stop between micro-batches (instead
of the provider's SIGKILL, which would leave half a batch), a run that finds another processor
holding the checkpoint is skipped with that reason instead of failing, and the asset events of a
run name the windows it changed (count and event-time range) for the quality DAG.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from cinestream.errors import EXIT_PROCESSOR_BUSY

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # pragma: no cover - older task SDKs
    from airflow.exceptions import AirflowSkipException


class CinestreamSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator with a graceful stop and 'checkpoint busy' as a skip.

    :param graceful_stop_timeout: seconds to wait for the query to stop between batches after a
        stop request before falling back to killing spark-submit.
    """

    def __init__(self, *, graceful_stop_timeout: float = 120, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.graceful_stop_timeout = graceful_stop_timeout

    def execute(self, context: Any) -> None:
        from cinestream.orchestration import task_bodies

        # The job writes to the metrics database of the Airflow connection, like every task.
        database_url = task_bodies.metrics_db_url()
        self.env_vars = {**(self.env_vars or {}), "CINESTREAM_DATABASE_URL": database_url}
        since = task_bodies.store_clock(database_url)
        try:
            super().execute(context)
        except Exception as exc:
            if f"Error code is: {EXIT_PROCESSOR_BUSY}" in str(exc):
                raise AirflowSkipException(
                    "another stream processor holds the checkpoint (for example the live one "
                    "`make up` runs); this run has nothing to do"
                ) from exc
            raise
        # The asset event says which windows changed, so the quality DAG validates just those.
        extra = task_bodies.windows_changed_since(database_url, since)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra

    def on_kill(self) -> None:
        from cinestream.settings import Settings
        from cinestream.stream.start_plan import request_stop

        hook = getattr(self, "_hook", None)
        process = getattr(hook, "_submit_sp", None) if hook else None
        if process is not None and process.poll() is None:
            path = request_stop(Settings())
            self.log.info("asked the processor to stop between batches (%s)", path)
            deadline = time.monotonic() + self.graceful_stop_timeout
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            if process.poll() is not None:
                self.log.info(
                    "spark-submit exited with %s after the graceful stop", process.returncode
                )
                return
            self.log.warning(
                "no graceful stop within %.0fs; killing spark-submit", self.graceful_stop_timeout
            )
        super().on_kill()
