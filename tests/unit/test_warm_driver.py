"""The guard of the tests' warm driver (tests/warm_driver.py): a job runs there only when its
spark-submit asks for the driver the warm one is, whether the CLI or Airflow's hook built it."""

from __future__ import annotations

import json
import os

import pytest
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

from cinestream.errors import CinestreamError
from cinestream.orchestration.task_bodies import spark_job_kwargs
from cinestream.settings import Settings
from cinestream.stream.submit import spark_submit_command
from tests.warm_driver import cold_spark_submit, driver_env, runs_warm, submit_options

SCRIPT = "ratings_stream_processor.py"


def _options(cmd: list[str]) -> dict:
    app = next(i for i, a in enumerate(cmd) if a.endswith(SCRIPT))
    return submit_options(cmd[1:app])


def _hook_command(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT",
        json.dumps(
            {
                "conn_type": "spark",
                "host": Settings().spark_master,
                "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
            }
        ),
    )
    kwargs = spark_job_kwargs(SCRIPT, ["--trigger", "available-now"])
    application = kwargs.pop("application")
    hook = SparkSubmitHook(conn_id="spark_default", **kwargs)
    return hook._build_spark_submit_command(application)


def test_the_clis_and_airflows_commands_ask_for_the_same_driver(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    cli = spark_submit_command(Settings(), SCRIPT, ["--trigger", "available-now"])
    hook = _hook_command(monkeypatch)
    assert cli[1:] != hook[1:]  # another order, --deploy-mode, another --name
    assert _options(cli) == _options(hook)
    assert _options(cli)["conf"]["spark.sql.session.timeZone"] == "UTC"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CINESTREAM_SPARK_DRIVER_MEMORY", "384m"),
        ("CINESTREAM_SHUFFLE_PARTITIONS", "3"),
        ("CINESTREAM_SPARK_MASTER", "local[1]"),
    ],
)
def test_another_driver_is_not_the_warm_one(
    tmp_path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    warm = _options(spark_submit_command(Settings(), SCRIPT, []))
    monkeypatch.setenv(variable, value)
    assert _options(spark_submit_command(Settings(), SCRIPT, [])) != warm


def _real(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    cmd = spark_submit_command(Settings(), SCRIPT, [])
    return {"options": _options(cmd), "env": driver_env(os.environ), "spark_submit": cmd[0]}


def test_a_job_runs_warm_only_with_the_drivers_options_and_environment(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _real(monkeypatch, tmp_path)
    argv = spark_submit_command(Settings(), SCRIPT, ["--trigger", "available-now"])[1:]
    env = dict(os.environ)
    assert runs_warm(real, argv, env)
    # Another JVM option, another Hadoop configuration, another java: cold.
    assert not runs_warm(
        real, argv, {**env, "SPARK_SUBMIT_OPTS": "-Dspark.driver.maxResultSize=1m"}
    )
    assert not runs_warm(real, argv, {**env, "HADOOP_CONF_DIR": str(tmp_path)})
    assert not runs_warm(real, argv, {**env, "PATH": str(tmp_path)})
    # The job's own settings are the job's, not the driver's: warm.
    assert runs_warm(real, argv, {**env, "CINESTREAM_RATINGS_TOPIC": "other"})
    # Not one of cinestream's jobs: cold.
    other = [a if not a.endswith(SCRIPT) else str(tmp_path / "job.py") for a in argv]
    assert not runs_warm(real, other, env)


def test_the_cold_spark_submit_is_the_one_the_caller_would_have_run(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = {"spark_submit": "/venv/bin/spark-submit"}
    client_dir, other_dir = tmp_path / "warm", tmp_path / "bin"
    for d in (client_dir, other_dir):
        d.mkdir()
        (d / "spark-submit").write_text("#!/bin/sh\n")
        (d / "spark-submit").chmod(0o700)
    client = client_dir / "spark-submit"
    # The CLI named the client: pyspark's spark-submit, as without the setting.
    cli_env = {"CINESTREAM_SPARK_SUBMIT": str(client), "PATH": str(client_dir)}
    assert cold_spark_submit(client, real, cli_env) == real["spark_submit"]
    # Airflow found the client on PATH: the next spark-submit there, or none (exit 127).
    path = f"{client_dir}:{other_dir}"
    assert cold_spark_submit(client, real, {"PATH": path}) == str(other_dir / "spark-submit")
    assert cold_spark_submit(client, real, {"PATH": str(client_dir)}) is None


def test_a_spark_submit_that_is_not_there_is_named(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CINESTREAM_SPARK_SUBMIT", str(tmp_path / "nowhere" / "spark-submit"))
    with pytest.raises(CinestreamError, match=r"nowhere/spark-submit.*CINESTREAM_SPARK_SUBMIT"):
        spark_submit_command(Settings(), SCRIPT, [])
