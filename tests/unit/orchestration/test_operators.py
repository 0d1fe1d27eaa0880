"""The Spark job operator's answer to a busy checkpoint (exit 75), read from spark-submit's return
code: a real provider hook running a stand-in ``spark-submit`` that exits with a chosen code (no
Spark, no database: the task bodies the operator calls around the job are replaced)."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from cinestream.errors import EXIT_PROCESSOR_BUSY
from cinestream.orchestration import task_bodies
from cinestream.orchestration.operators import CinestreamSparkSubmitOperator


@dataclass
class Job:
    """The stand-in's exit code file and the operator's calls to wait for the holder."""

    exit_code: Path
    waited: list[Any] = field(default_factory=list)


@pytest.fixture
def spark_submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Job:
    """A ``spark-submit`` on PATH that exits with the code in ``exit_code`` next to it."""
    script = tmp_path / "bin" / "spark-submit"
    script.parent.mkdir()
    script.write_text(
        f'#!/bin/sh\necho "stand-in spark-submit $*"\nexit $(cat {tmp_path}/exit_code)\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT",
        json.dumps({"conn_type": "spark", "host": "local[1]", "extra": {}}),
    )
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path / "state"))
    job = Job(tmp_path / "exit_code")
    monkeypatch.setattr(task_bodies, "metrics_db_url", lambda *a: "postgresql://unused")
    monkeypatch.setattr(task_bodies, "store_clock", lambda url: None)
    monkeypatch.setattr(task_bodies, "ratings_end_offsets", lambda: {0: 10})
    monkeypatch.setattr(task_bodies, "windows_changed_since", lambda url, since: {"windows": 0})
    monkeypatch.setattr(task_bodies, "wait_for_checkpoint_holder", lambda *a: job.waited.append(a))
    return job


def _run(job: Job, exit_code: int, on_busy: str, own_stop_file: bool) -> None:
    job.exit_code.write_text(str(exit_code))
    op = CinestreamSparkSubmitOperator(
        task_id="stream",
        application="job.py",
        conn_id="spark_default",
        on_busy=on_busy,
        own_stop_file=own_stop_file,
    )
    ti = SimpleNamespace(dag_id="d", task_id="stream", run_id="r", try_number=1)
    op.execute({"ti": ti, "outlet_events": {}})


@pytest.mark.parametrize("own_stop_file", [False, True])
def test_a_busy_checkpoint_skips_waits_or_fails_as_the_dag_says(
    spark_submit: Job, own_stop_file: bool
) -> None:
    with pytest.raises(AirflowSkipException, match="another stream processor"):
        _run(spark_submit, EXIT_PROCESSOR_BUSY, "skip", own_stop_file)
    _run(spark_submit, EXIT_PROCESSOR_BUSY, "wait", own_stop_file)
    assert len(spark_submit.waited) == 1
    assert spark_submit.waited[0][1] == {0: 10}
    with pytest.raises(Exception, match="Error code is: 75"):
        _run(spark_submit, EXIT_PROCESSOR_BUSY, "fail", own_stop_file)


@pytest.mark.parametrize("on_busy", ["skip", "wait"])
def test_any_other_failure_fails_whatever_on_busy_says(spark_submit: Job, on_busy: str) -> None:
    # A job that failed for another reason must not pass for a busy checkpoint: even when its
    # error text happens to mention 75.
    with pytest.raises(Exception, match="Error code is: 1"):
        _run(spark_submit, 1, on_busy, False)
    assert spark_submit.waited == []


def test_a_successful_job_passes(spark_submit: Job) -> None:
    _run(spark_submit, 0, "fail", True)


def test_the_generator_task_fails_when_ratings_were_not_delivered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The provider only reports a failed delivery to the callback: a refused principal would
    end the task green with nothing written."""
    from confluent_kafka import KafkaError

    from cinestream.errors import CinestreamError

    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path / "state"))
    task_bodies.DELIVERIES.ok = task_bodies.DELIVERIES.failed = 0
    task_bodies.DELIVERIES.first_error = ""
    task_bodies.on_delivery(None, None)
    task_bodies.check_deliveries()  # all delivered: passes
    task_bodies.on_delivery(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
    with pytest.raises(CinestreamError, match=r"1 of 2 ratings were not delivered: Kafka refused"):
        task_bodies.check_deliveries()
