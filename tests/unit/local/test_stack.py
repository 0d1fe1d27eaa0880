"""Paths and commands the local stack starts with (no services needed)."""

from __future__ import annotations

from pathlib import Path

from cinestream.local.stack import dashboard_command
from cinestream.settings import Settings
from cinestream.stream.submit import job_path


def test_the_dashboard_command_runs_the_app_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    cmd = dashboard_command(Settings(), port=8600)
    app = Path(cmd[cmd.index("run") + 1])
    assert app.is_file() and app.name == "app.py" and app.parent.name == "dashboard"
    assert cmd[cmd.index("--server.port") + 1] == "8600"


def test_the_spark_jobs_exist() -> None:
    for script in ("ratings_stream_processor.py", "ratings_backfill.py"):
        assert job_path(script).is_file(), script


def test_kraft_cluster_ids_never_look_like_an_option() -> None:
    from cinestream.local.kafka_nodes import new_cluster_id

    ids = [new_cluster_id() for _ in range(2_000)]  # ~1 in 64 random ids starts with "-"
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids) and len(set(ids)) == len(ids)


def test_a_state_dir_keeps_its_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from cinestream.errors import CinestreamError
    from cinestream.local.stack import choose_profile

    cluster, single, old = tmp_path / "c", tmp_path / "s", tmp_path / "old"
    assert choose_profile(cluster, cluster=True) == "cluster"
    assert choose_profile(cluster, cluster=False) == "cluster"  # `make up` starts it again
    assert (cluster / "profile").read_text() == "cluster"
    assert choose_profile(single, cluster=False) == "single"
    with pytest.raises(CinestreamError, match="holds a single-node stack"):
        choose_profile(single, cluster=True)
    (old / "kafka").mkdir(parents=True)  # a state dir from before profiles were recorded
    with pytest.raises(CinestreamError, match=r"make down && rm -rf"):
        choose_profile(old, cluster=True)


def test_the_cluster_nodes_and_their_broker_configs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cinestream.local.kafka_nodes import broker_properties, kafka_nodes

    single = Settings(state_dir=tmp_path / "s")
    (node,) = kafka_nodes(single)
    assert (node.name, node.port, node.controller_port) == ("kafka", 9092, 9093)
    lines = broker_properties(single, node, [node], tmp_path / "data")
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in lines
    assert not any("sasl" in line for line in lines)

    cluster = Settings(state_dir=tmp_path / "c", profile="cluster")
    nodes = kafka_nodes(cluster)
    assert [(n.name, n.node_id, n.port, n.controller_port) for n in nodes] == [
        ("kafka-1", 1, 9092, 9192),
        ("kafka-2", 2, 9093, 9193),
        ("kafka-3", 3, 9094, 9194),
    ]
    lines = broker_properties(cluster, nodes[1], nodes, tmp_path / "data")
    for line in (
        "node.id=2",
        "controller.quorum.voters=1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194",
        "listeners=SASL_PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "unclean.leader.election.enable=false",
    ):
        assert line in lines, line
    (jaas,) = [x for x in lines if x.startswith("listener.name.sasl_plaintext.scram-sha-512.")]
    assert 'username="kafka-broker"' in jaas
    # Issue 20: every request authorized; the controller listener takes the brokers' identity
    # only (SASL/PLAIN), never an anonymous principal; the single node has neither.
    for line in (
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "super.users=User:kafka-broker;User:cinestream-admin",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.mechanism.controller.protocol=PLAIN",
    ):
        assert line in lines, line
    (plain,) = [x for x in lines if x.startswith("listener.name.controller.plain.")]
    password = (tmp_path / "c" / "secrets" / "kafka_kafka-broker_password").read_text()
    assert f'username="kafka-broker" password="{password}" user_kafka-broker="{password}";' in plain
    assert not any(
        "authorizer" in line for line in broker_properties(single, node, [node], tmp_path)
    )


def test_a_large_kafka_read_is_split_over_twice_the_cores(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cinestream.stream.kafka_io import records_per_task

    settings = Settings(state_dir=tmp_path)  # batches of 500,000; local[2]
    assert records_per_task(spark, settings) == 125_000
    small = settings.model_copy(update={"max_offsets_per_trigger": 1_000})
    assert records_per_task(spark, small) == 10_000  # a live batch is never split
    fixed = settings.model_copy(update={"kafka_max_records_per_task": 7})
    assert records_per_task(spark, fixed) == 7
