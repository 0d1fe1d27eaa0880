"""docker-compose.yml's Kafka brokers, run for real without Docker: infra/compose/kafka-start.sh
(the brokers' entrypoint in compose) started three times on the loopback address, with
``kafka-storage.sh`` and ``kafka-server-start.sh`` standing for the image's scripts over the same
Kafka jars the project resolves. The compose cluster then takes SCRAM clients only, and replicates
each topic three times with min.insync.replicas 2."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
PORT = 26092
CONTROLLER = 26192


@pytest.fixture
def compose_kafka(tmp_path: Path) -> Iterator[Any]:
    from cinestream.jars import jars
    from cinestream.kafka.acls import ROLES, principal_user
    from cinestream.local.kafka_nodes import LOG4J2, new_cluster_id
    from cinestream.settings import Settings

    home = tmp_path / "kafka-home"
    (home / "bin").mkdir(parents=True)
    (tmp_path / "log4j2.properties").write_text(LOG4J2)
    classpath = ":".join(str(j) for j in jars("kafka"))
    (home / "libs").mkdir()  # the image's jars (the script formats with java -cp libs/*)
    for jar in jars("kafka"):
        (home / "libs" / jar.name).symlink_to(jar)
    for script, main in (("kafka-server-start.sh", "kafka.Kafka"),):
        path = home / "bin" / script
        path.write_text(
            "#!/bin/sh\nexec java -Xmx512m $KAFKA_OPTS "
            f"-Dlog4j2.configurationFile={tmp_path / 'log4j2.properties'} "
            f'-cp {classpath} {main} "$@"\n'
        )
        path.chmod(0o755)
    passwords = {role: secrets.token_urlsafe(18) for role in ROLES}
    broker_password = secrets.token_urlsafe(18)
    common = {
        "KAFKA_HOME": str(home),
        "KAFKA_CLUSTER_ID": new_cluster_id(),
        "KAFKA_BROKER_PASSWORD": broker_password,
        "KAFKA_ADVERTISED_HOST": "127.0.0.1",
        "KAFKA_VOTERS": ",".join(f"{i}@127.0.0.1:{CONTROLLER + i - 1}" for i in (1, 2, 3)),
        **{f"KAFKA_{role.upper()}_PASSWORD": password for role, password in passwords.items()},
    }
    procs = []
    for i in (1, 2, 3):
        env = {
            **os.environ,
            **common,
            "KAFKA_NODE_ID": str(i),
            "KAFKA_PORT": str(PORT + i - 1),
            "KAFKA_CONTROLLER_PORT": str(CONTROLLER + i - 1),
            "KAFKA_DATA_DIR": str(tmp_path / f"data-{i}"),
            "KAFKA_CONF_DIR": str(tmp_path / f"conf-{i}"),
            # As the other test brokers run (tests/conftest.py), through Kafka's own variable.
            "KAFKA_OPTS": os.environ.get("CINESTREAM_DAEMON_JVM_OPTS", ""),
        }
        with open(tmp_path / f"kafka-{i}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    ["/bin/sh", str(REPO / "infra/compose/kafka-start.sh")],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    settings = Settings(
        profile="single",
        state_dir=tmp_path / "state",
        kafka_bootstrap=",".join(f"127.0.0.1:{PORT + i}" for i in range(3)),
        kafka_security_protocol="SASL_PLAINTEXT",
        # Each role's principal, as compose's containers get them (the admin when none is chosen).
        kafka_sasl_passwords={
            "kafka-broker": broker_password,  # lets `up`'s user check run here too
            **{principal_user(r): password for r, password in passwords.items()},
        },
        replication_factor=3,
        ratings_topic="compose_ratings",
        metrics_topic="compose_metrics",
        dlq_topic="compose_dlq",
    )
    try:
        yield settings, tmp_path
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)


def test_the_compose_brokers_take_scram_clients_only_and_replicate(compose_kafka: Any) -> None:
    from confluent_kafka.admin import ConfigResource

    from cinestream.errors import ServiceUnavailable
    from cinestream.kafka import admin

    settings, folder = compose_kafka
    deadline = time.monotonic() + 120
    while admin.cluster_brokers(settings) != {1, 2, 3}:
        logs = " | ".join(p.read_text()[-300:] for p in sorted(folder.glob("kafka-*.log")))
        assert time.monotonic() < deadline, f"the compose brokers did not form a cluster: {logs}"
        time.sleep(1)
    # The script keeps its secrets private.
    assert (folder / "conf-1" / "server.properties").stat().st_mode & 0o077 == 0

    # The processor may not create topics (StandardAuthorizer); the set-up job (topics create, as
    # the admin: a super user) creates the ACLs, then the topics.
    from cinestream.kafka import acls

    with pytest.raises(acls.KafkaRefused, match="CREATE on topic 'compose_ratings' to principal "):
        admin.create_topics(settings.for_kafka_role("processor"))
    assert len(acls.provision(settings)) == sum(len(g) for g in acls.acl_table(settings).values())
    assert admin.create_topics(settings) == ["compose_ratings", "compose_metrics", "compose_dlq"]
    assert admin.partition_offsets(settings.for_kafka_role("reader"), "compose_ratings")
    client = admin.admin_client(settings)
    topics = client.list_topics(timeout=10).topics
    for name in ("compose_ratings", "compose_metrics", "compose_dlq"):
        for partition in topics[name].partitions.values():
            assert sorted(partition.replicas) == [1, 2, 3]
    # The brokers' own defaults (topics created by anyone else): three copies, two in sync.
    broker = client.describe_configs([ConfigResource("broker", "2")])
    config = next(iter(broker.values())).result()
    assert config["default.replication.factor"].value == "3"
    assert config["min.insync.replicas"].value == "2"
    assert config["unclean.leader.election.enable"].value == "false"

    plain = settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(ServiceUnavailable, match="requires authentication"):
        admin.list_topics(plain)
    wrong = settings.model_copy(update={"kafka_sasl_password": "not-the-password"})
    with pytest.raises(ServiceUnavailable, match="refused the credentials of user 'cinestream-"):
        admin.list_topics(wrong)
