"""Launching the Spark jobs: the spark-submit command line, its environment, and the job-side
SparkSession."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from cinestream.errors import CinestreamError
from cinestream.jars import jars
from cinestream.local.secrets import stored_secret
from cinestream.settings import REPO_ROOT, Settings

SPARK_JOBS_DIR = REPO_ROOT / "spark_jobs"
LOG4J2 = REPO_ROOT / "infra" / "spark" / "log4j2.properties"
# The throughput collector, not G1: on two cores G1's concurrent threads take CPU from Spark's
# tasks. Measured on the 1,000,000-rating pass (bench/, 2026-11-29): cold 17.4-19.4 s -> 16.0-17.4
# s, warm 7.7-7.9 s -> 6.8-6.9 s. Pauses stay short: the heap is the driver's 2 GiB.
JVM_GC = "-XX:+UseParallelGC"


# The standalone cluster on this machine (the cluster profile) takes only jobs that know its
# generated secret (``spark.authenticate``). The secret never appears in argv: the daemons get it
# in Spark's own environment variable, spark-submit in a private properties file.
SPARK_AUTH_SECRET = "spark_auth_secret"  # noqa: S105 (a file name)
SPARK_AUTH_ENV = "_SPARK_AUTH_SECRET"
SPARK_SUBMIT_PROPERTIES = "spark-submit.conf"


def spark_auth_secret(settings: Settings) -> str:
    """The local standalone cluster's ``spark.authenticate`` secret, generated on first use."""
    return stored_secret(settings.state_dir, SPARK_AUTH_SECRET)


def authenticates_to_local_cluster(settings: Settings) -> bool:
    """True for jobs to the cluster profile's own standalone master (which cinestream started
    with its secret); a standalone master of someone else's keeps its own configuration."""
    return settings.cluster and settings.uses_local_spark_cluster


def spark_properties_file(settings: Settings) -> Path | None:
    """spark-submit's ``--properties-file`` for the local standalone cluster (mode 600: it
    holds the secret), written on each call; ``None`` for any other master."""
    if not authenticates_to_local_cluster(settings):
        return None
    path = settings.state_dir / "secrets" / SPARK_SUBMIT_PROPERTIES
    text = f"spark.authenticate true\nspark.authenticate.secret {spark_auth_secret(settings)}\n"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    return path


def python_env() -> dict[str, str]:
    """Driver and workers run this venv's Python (pyspark, pyarrow and cinestream live there)."""
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark configuration every cinestream job runs with (CLI and Airflow alike)."""
    python = python_env()
    conf = {
        "spark.pyspark.python": python["PYSPARK_PYTHON"],
        "spark.pyspark.driver.python": python["PYSPARK_DRIVER_PYTHON"],
        "spark.sql.session.timeZone": "UTC",
        "spark.log.structuredLogging.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2} {JVM_GC}",
        "spark.executor.extraJavaOptions": JVM_GC,
    }
    if settings.spark_cores_max:
        conf["spark.cores.max"] = str(settings.spark_cores_max)
    if settings.uses_local_spark_cluster:
        # Executors on this machine's workers call the driver back on the loopback address.
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if authenticates_to_local_cluster(settings):
        conf["spark.authenticate"] = "true"  # its secret: spark_properties_file
    replication = settings.hdfs_replication or (1 if settings.uses_local_hdfs else 0)
    if replication:
        # The cluster profile's HDFS (and compose's) has one DataNode: one replica per block
        # (the client's default 3 would leave every checkpoint file under-replicated).
        conf["spark.hadoop.dfs.replication"] = str(replication)
    return conf


def connector_jars() -> str:
    """The Kafka connector jars as spark-submit's ``--jars`` value."""
    return ",".join(str(j) for j in jars("spark"))


def job_path(script: str) -> Path:
    """A job script of ``spark_jobs/``."""
    return SPARK_JOBS_DIR / script


def venv_spark_submit() -> Path:
    """pyspark's ``spark-submit`` in this venv."""
    return Path(sys.executable).parent / "spark-submit"


def spark_submit_command(settings: Settings, script: str, args: list[str]) -> list[str]:
    """``spark-submit`` (this venv's pyspark's unless ``CINESTREAM_SPARK_SUBMIT`` names another)
    with the Kafka connector jars."""
    spark_submit = settings.spark_submit or str(venv_spark_submit())
    if not os.access(spark_submit, os.X_OK) or not Path(spark_submit).is_file():
        raise CinestreamError(
            f"spark-submit {spark_submit!r} is not an executable file"
            + (" (CINESTREAM_SPARK_SUBMIT)" if settings.spark_submit else ": run `make install`")
        )
    cmd = [
        spark_submit,
        "--master",
        settings.spark_master,
        "--name",
        Path(script).stem,
        "--driver-memory",
        settings.spark_driver_memory,
        "--jars",
        connector_jars(),
    ]
    properties = spark_properties_file(settings)
    if properties is not None:
        cmd += ["--properties-file", str(properties)]
    for key, value in spark_conf(settings).items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, str(job_path(script)), *args]


# The principal every Spark job of cinestream (processor, backfill) reads and writes Kafka as.
JOB_KAFKA_ROLE = "processor"


def job_env() -> dict[str, str]:
    """What a job's driver needs in its environment: :func:`python_env`, and the processor's
    Kafka principal (``CINESTREAM_KAFKA_ROLE``; kafka/acls.py)."""
    return {**python_env(), "CINESTREAM_KAFKA_ROLE": JOB_KAFKA_ROLE}


def spark_env() -> dict[str, str]:
    """This process's environment plus :func:`job_env`, for launching spark-submit."""
    return {**os.environ, **job_env()}


def job_session(app_name: str, settings: Settings) -> Any:
    """The SparkSession inside a job started by spark-submit (or a local one in tests)."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
    )
    if "SPARK_SUBMIT_OPTS" not in os.environ and not os.environ.get("SPARK_ENV_LOADED"):
        builder = builder.master(settings.spark_master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def configure_job_logging(verbose: bool = False) -> None:
    """Log lines of a Spark job's driver to stderr; py4j's chatter kept quiet."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "py4j.clientserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
