"""The operators of cinestream's Spark jobs and of its generator (an ordinary package module: the
DAGs import it; Airflow needs no plugin for an operator).

``CinestreamSparkSubmitOperator`` is the provider's SparkSubmitOperator with the behaviours a
supervised stream processor needs:

- Stopping the task (mark failed/success in the UI, a timeout, ``cinestream down``) stops *its
  own* processor between micro-batches through a stop file of this task try alone, instead of the
  provider's SIGKILL, which would leave half a batch; other processors on the checkpoint go on.
- The job writes to the metrics database of the Airflow connection, and knows which task runs it
  (``AIRFLOW_CTX_*``), so ``cinestream status`` and ``doctor`` name the DAG that holds the lock.
- A run that finds another processor holding the checkpoint fails (and is retried, the
  supervised live stream), is skipped with that reason (``on_busy="skip"``) or, in the end-to-end
  pipeline, waits until that processor has committed everything that was in the topic when the
  run began (``on_busy="wait"``): the work is done either way, by the live processor.
- The asset events of a run name the windows it changed (count and event-time range) for the
  quality DAG.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from airflow.providers.apache.kafka.operators.produce import ProduceToTopicOperator
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowSkipException

from cinestream.errors import EXIT_PROCESSOR_BUSY


class CinestreamSparkSubmitOperator(SparkSubmitOperator):
    """SparkSubmitOperator with a graceful stop of its own job and 'checkpoint busy' handling.

    :param graceful_stop_timeout: seconds to wait for the query to stop between batches after a
        stop request before falling back to killing spark-submit.
    :param own_stop_file: pass the job ``--stop-file`` (a file of this task try) so that stopping
        the task stops only this job.
    :param on_busy: ``"fail"`` (and be retried), ``"skip"`` or ``"wait"`` when another processor
        holds the checkpoint.
    :param busy_wait_timeout: how long ``on_busy="wait"`` waits for the other processor.
    """

    def __init__(
        self,
        *,
        graceful_stop_timeout: float = 120,
        own_stop_file: bool = False,
        on_busy: str = "fail",
        busy_wait_timeout: float = 1800,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_busy not in ("fail", "skip", "wait"):
            raise ValueError(f"on_busy must be 'fail', 'skip' or 'wait', not {on_busy!r}")
        self.graceful_stop_timeout = graceful_stop_timeout
        self.own_stop_file = own_stop_file
        self.on_busy = on_busy
        self.busy_wait_timeout = busy_wait_timeout
        self._stop_file: Path | None = None

    def _task_stop_file(self, context: Any) -> Path:
        from cinestream.settings import Settings
        from cinestream.stream.stop_files import task_stop_file

        ti = context["ti"]
        return task_stop_file(Settings(), ti.dag_id, ti.task_id, ti.run_id, ti.try_number)

    def _exit_code(self) -> int | None:
        """spark-submit's exit code once it has ended (None if it never started)."""
        process = getattr(self._hook, "_submit_sp", None) if self._hook else None
        return None if process is None else process.returncode

    def execute(self, context: Any) -> None:
        from cinestream.orchestration import task_bodies

        ti = context["ti"]
        database_url = task_bodies.metrics_db_url()
        self.env_vars = {
            **(self.env_vars or {}),
            # The job writes to the metrics database of the Airflow connection, like every task.
            "CINESTREAM_DATABASE_URL": database_url,
            # Who runs the job, for the lock holder that `status` and `doctor` show.
            "AIRFLOW_CTX_DAG_ID": ti.dag_id,
            "AIRFLOW_CTX_TASK_ID": ti.task_id,
            "AIRFLOW_CTX_DAG_RUN_ID": ti.run_id,
            "AIRFLOW_CTX_TRY_NUMBER": str(ti.try_number),
        }
        # A DAG rendering templates as native objects turns "0" into 0: arguments are text.
        self.application_args = [str(a) for a in self.application_args or []]
        if self.own_stop_file:
            # spark-submit in a session of its own: the signals Airflow sends this task's process
            # group when the task is stopped (SIGTERM, then SIGKILL 5 s later) do not kill the
            # query mid-batch; the processor stops between batches on its stop file, or by itself
            # when this task process is gone (CINESTREAM_SUPERVISOR_PID).
            self.env_vars["CINESTREAM_SUPERVISOR_PID"] = str(os.getpid())
            self._stop_file = self._task_stop_file(context)
            self._stop_file.parent.mkdir(parents=True, exist_ok=True)
            self._stop_file.unlink(missing_ok=True)
            self.application_args = [
                *self.application_args,
                "--stop-file",
                str(self._stop_file),
            ]
            # The hook takes the arguments and environment when it is made: make it now.
            self._hook = self._get_hook()
            submit = self._hook.submit
            self._hook.submit = lambda application="", **kw: submit(  # type: ignore[method-assign]
                application, start_new_session=True, **kw
            )
        since = task_bodies.store_clock(database_url)
        topic_end = task_bodies.ratings_end_offsets() if self.on_busy == "wait" else None
        try:
            super().execute(context)
        except Exception as exc:
            if self._exit_code() != EXIT_PROCESSOR_BUSY or self.on_busy == "fail":
                raise
            if self.on_busy == "skip":
                raise AirflowSkipException(
                    "another stream processor holds the checkpoint (the live one that "
                    "cinestream_stream runs, or one started by hand); this run has nothing to do"
                ) from exc
            task_bodies.wait_for_checkpoint_holder(database_url, topic_end, self.busy_wait_timeout)
        # The asset event says which windows changed, so the quality DAG validates just those.
        extra = task_bodies.windows_changed_since(database_url, since)
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra

    def on_kill(self) -> None:
        hook = getattr(self, "_hook", None)
        process = getattr(hook, "_submit_sp", None) if hook else None
        if self._stop_file is not None and process is not None and process.poll() is None:
            self._stop_file.write_text("stopped from Airflow\n")
            self.log.info("asked the processor to stop between batches (%s)", self._stop_file)
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
        # A batch job (the backfill) replaces its windows in one transaction: killing it loses
        # nothing.
        super().on_kill()


class RatingsProducerOperator(ProduceToTopicOperator):
    """The Kafka provider's ``ProduceToTopicOperator`` for generated ratings, failing the task
    when any rating was not delivered (the provider only reports them to the callback)."""

    def execute(self, context: Any) -> None:
        from cinestream.orchestration import task_bodies

        super().execute(context)
        task_bodies.check_deliveries()
