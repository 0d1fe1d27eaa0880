"""Secrets stay out of argv: the commands the local stack starts, built without services (the
Kafka storage tool is run for real on tmp_path: it is a short JVM with no network)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from cinestream.local.kafka_nodes import LocalKafka
from cinestream.local.spark import LocalSpark
from cinestream.settings import Settings
from cinestream.stream.submit import (
    SPARK_AUTH_ENV,
    spark_auth_secret,
    spark_conf,
    spark_submit_command,
)


def _secrets(state: Path) -> list[str]:
    return [p.read_text().strip() for p in (state / "secrets").iterdir() if p.is_file()]


@pytest.fixture
def sasl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CINESTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CINESTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    return Settings()


def test_the_storage_format_reads_its_scram_passwords_from_a_private_file(
    sasl: Settings, tmp_path: Path
) -> None:
    kafka = LocalKafka(sasl)
    node = kafka.nodes[0]
    kafka._write_config(node)
    argfile = tmp_path / "secrets" / "format.args"
    command, content = kafka.format_command(node, argfile)
    passwords = _secrets(tmp_path)
    assert len(passwords) >= 2  # the brokers' and the clients'
    for password in passwords:
        assert not any(password in arg for arg in command)
        assert password in content
    # The java launcher really reads the arguments from the file: format for real.
    argfile.write_text(content)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (kafka.home(node) / "data" / "meta.properties").exists()


def _cluster_profile(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster profile on a state dir of the test's, its Spark master on a port nobody uses."""
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(state_dir))
    monkeypatch.setenv("CINESTREAM_PROFILE", "cluster")
    monkeypatch.setenv("CINESTREAM_SPARK_MASTER", "spark://127.0.0.1:47077")


def test_spark_submit_to_the_local_cluster_authenticates_without_the_secret_in_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cluster_profile(tmp_path, monkeypatch)
    settings = Settings()
    cmd = spark_submit_command(settings, "ratings_stream_processor.py", [])
    secret = spark_auth_secret(settings)
    assert not any(secret in arg for arg in cmd)
    assert spark_conf(settings)["spark.authenticate"] == "true"
    properties = Path(cmd[cmd.index("--properties-file") + 1])
    assert properties.stat().st_mode & 0o077 == 0
    assert f"spark.authenticate.secret {secret}" in properties.read_text()
    spark = LocalSpark(settings)
    env = spark._env()
    assert env[SPARK_AUTH_ENV] == secret
    for daemon in spark.daemons:
        assert not any(secret in arg for arg in spark.command(daemon))
    assert secret not in env["SPARK_DAEMON_JAVA_OPTS"]
    assert "-Dspark.authenticate=true" in env["SPARK_DAEMON_JAVA_OPTS"]


@pytest.mark.parametrize("master", ["local[2]", "spark://127.0.0.1:7077"])
def test_a_master_cinestream_did_not_start_gets_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master: str
) -> None:
    # local mode, and a standalone master of the user's own outside the cluster profile: its
    # spark-defaults.conf stays in charge (a --properties-file would hide it).
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CINESTREAM_SPARK_MASTER", master)
    cmd = spark_submit_command(Settings(), "ratings_stream_processor.py", [])
    assert "--properties-file" not in cmd and "spark.authenticate" not in " ".join(cmd)


def test_a_daemon_an_older_release_started_without_the_secret_is_recognised() -> None:
    import os
    import sys

    from cinestream.local.spark import runs_with_secret

    assert runs_with_secret(os.getpid()) is (SPARK_AUTH_ENV in os.environ)
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        env={**os.environ, SPARK_AUTH_ENV: "x"},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"  # running
        assert runs_with_secret(child.pid) is True
    finally:
        child.kill()
        child.wait()
    assert runs_with_secret(2**22 + 12345) is None


def test_the_spark_daemons_take_the_stacks_daemon_jvm_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cluster_profile(tmp_path, monkeypatch)
    monkeypatch.setenv("CINESTREAM_DAEMON_JVM_OPTS", "-XX:TieredStopAtLevel=1 '-Dnote=a b'")
    opts = shlex.split(LocalSpark(Settings())._env()["SPARK_DAEMON_JAVA_OPTS"])
    assert opts[-2:] == ["-XX:TieredStopAtLevel=1", "-Dnote=a b"]
    assert "-Dspark.authenticate=true" in opts
