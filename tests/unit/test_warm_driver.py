"""The guard of the tests' warm driver (tests/warm_driver.py): a job runs there only when its
spark-submit asks for the driver the warm one is, whether the CLI or Airflow's hook built it."""

from __future__ import annotations

import json

import pytest
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

from cinestream.orchestration.task_bodies import spark_job_kwargs
from cinestream.settings import Settings
from cinestream.stream.submit import spark_submit_command
from tests.warm_driver import submit_options

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
