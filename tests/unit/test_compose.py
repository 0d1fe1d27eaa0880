"""docker-compose.yml checked statically: the Compose schema, and against the code."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cinestream.kafka.acls import ROLES, principal_user
from cinestream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
RAW = (REPO / "docker-compose.yml").read_text()
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:\?[^}]*)?\}")
HADOOP_VAR = re.compile(r"^(CORE|HDFS)-SITE\.XML_(dfs|fs)\.[a-zA-Z0-9.-]+$")


def compose() -> dict[str, Any]:
    # Interpolate like `docker compose config` would with a filled .env.
    return yaml.safe_load(VARIABLE.sub(lambda m: f"x{m.group(1).lower()}", RAW))


def test_validates_against_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validate(compose(), schema)


def test_no_default_passwords_and_env_example_lists_every_variable() -> None:
    names = {m.group(1) for m in VARIABLE.finditer(RAW)}
    assert names, "the file takes its secrets from the environment"
    for match in VARIABLE.finditer(RAW):
        assert match.group(2), f"${{{match.group(1)}}} needs :? so a missing value stops compose"
    example = (REPO / ".env.example").read_text()
    for name in names:
        assert re.search(rf"^{name}=", example, re.M), f"{name} missing from .env.example"
    assert "admin:admin@" not in RAW and "password: admin" not in RAW.lower()


def test_every_image_is_pinned_and_spark_matches_pyspark() -> None:
    import pyspark

    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    images = {s["image"] for s in compose()["services"].values()}
    assert f"apache/spark:{pyspark.__version__}" in images
    pom = (REPO / "infra/kafka/pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)<", pom).group(1)  # type: ignore[union-attr]
    assert f"apache/kafka:{kafka_version}" in images


def test_ports_match_the_spec() -> None:
    services = compose()["services"]
    assert "8000:8000" in services["api"]["ports"]
    assert "8501:8501" in services["dashboard"]["ports"]
    assert "8080:8080" in services["airflow-api-server"]["ports"]
    defaults = Settings()
    assert (defaults.api_port, defaults.dashboard_port, defaults.airflow_port) == (8000, 8501, 8080)


def test_every_path_and_command_exists_in_the_repo() -> None:
    data = compose()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
        build = service.get("build")
        if build:
            assert (REPO / build["context"] / build["dockerfile"]).exists()
        command = service.get("command") or []
        if command and command[0] == "cinestream":
            from click.testing import CliRunner

            from cinestream.cli import cli

            result = CliRunner().invoke(cli, [command[1], "--help"])
            assert result.exit_code == 0, (name, command)
        if command and command[0] == "airflow":
            assert command[1] in {"db", "api-server", "scheduler", "dag-processor", "triggerer"}
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'cinestream = "cinestream.cli:main"' in pyproject


def _airflow_option_exists(name: str) -> bool:
    from airflow.configuration import conf

    _, section, key = name.split("__", 2)
    options = conf.configuration_description.get(section.lower(), {}).get("options", {})
    return key.lower() in options


def test_every_environment_variable_is_read_by_someone() -> None:
    fields = {f"CINESTREAM_{f.upper()}" for f in Settings.model_fields}
    init_script = (REPO / "infra/compose/postgres-init.sh").read_text()
    kafka_script = (REPO / "infra/compose/kafka-start.sh").read_text()
    entrypoint = (REPO / "infra/compose/cinestream-entrypoint.sh").read_text()
    image_prefixes = {"postgres": "POSTGRES_", "spark-master": "SPARK_", "spark-worker": "SPARK_"}
    for name, service in compose()["services"].items():
        for var in service.get("environment", {}):
            if name.startswith("kafka-"):
                assert f"${{{var}" in kafka_script, (name, var)
            elif name in ("namenode", "datanode"):
                # apache/hadoop's entrypoint writes <FILE>_<property> into that file.
                assert HADOOP_VAR.match(var) or var == "ENSURE_NAMENODE_DIR", (name, var)
            elif var.startswith("CINESTREAM_") and name != "postgres":
                assert var in fields, (name, var)
            elif var.startswith("AIRFLOW_CONN_"):
                continue
            elif var.startswith("AIRFLOW__"):
                assert _airflow_option_exists(var), (name, var)
            elif name == "postgres" and not var.startswith("POSTGRES_"):
                assert f"${{{var}}}" in init_script, (name, var)
            elif service.get("image", "").startswith("cinestream:"):
                assert f"${{{var}" in entrypoint, (name, var)
            else:
                # _SPARK_AUTH_SECRET: Spark's own variable for the spark.authenticate secret.
                assert var.lstrip("_").startswith(image_prefixes.get(name, "\0")), (name, var)


def test_three_brokers_replicated_and_authenticated() -> None:
    services = compose()["services"]
    brokers = {n: s for n, s in services.items() if n.startswith("kafka-")}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    assert sorted(s["environment"]["KAFKA_NODE_ID"] for s in brokers.values()) == ["1", "2", "3"]
    for name, broker in brokers.items():
        assert broker["hostname"] == name
        assert broker["entrypoint"] == ["/bin/sh", "/opt/cinestream/kafka-start.sh"]
        assert "ports" not in broker, f"{name} is reachable only inside the network"
        assert any(v.endswith(":/var/lib/kafka/data") for v in broker["volumes"])
    script = (REPO / "infra/compose/kafka-start.sh").read_text()
    for line in (
        "VOTERS=${KAFKA_VOTERS:-1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093}",
        "listeners=SASL_PLAINTEXT://:$PORT,CONTROLLER://:$CONTROLLER_PORT",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=$MECHANISM",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "unclean.leader.election.enable=false",
        "--add-scram",
        # The controller listener authenticates too (SASL/PLAIN: SCRAM cannot, there).
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.mechanism.controller.protocol=PLAIN",
        # The storage tool's passwords reach java through a private argument file, not argv.
        '"@$ARGS"',
        # Every request is authorized; the brokers' user and the admin are the super users.
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "super.users=User:kafka-broker;User:cinestream-admin",
    ):
        assert line in script, line
    assert "PLAINTEXT://:" not in script.replace("SASL_PLAINTEXT://:", "")
    assert "CONTROLLER:PLAINTEXT," not in script and "kafka-storage.sh" not in script

    # The brokers format their storage with every principal of kafka/acls.py.
    for user in ["kafka-broker", *(principal_user(role) for role in ROLES)]:
        assert f'--add-scram "$MECHANISM=[name={user},password=' in script, user


def _settings_of(service: dict[str, Any], role: str | None = None) -> Settings:
    """The Settings a container's CINESTREAM_* give (as ``role``'s principal, when given)."""
    env = service["environment"]
    settings = Settings(
        profile="single",
        **{
            # A JSON object in the environment, as pydantic-settings reads it there.
            k.removeprefix("CINESTREAM_").lower(): json.loads(v) if str(v).startswith("{") else v
            for k, v in env.items()
            if k.startswith("CINESTREAM_") and k != "CINESTREAM_STATE_DIR"
        },
    )
    return settings.for_kafka_role(role) if role else settings


# Which roles' passwords each container holds, and its own principal (kafka/acls.py).
CONTAINER_ROLES = {
    "airflow-scheduler": {"admin", "generator", "processor", "auditor"},
    "airflow-triggerer": {"admin", "generator", "processor", "auditor"},
    "api": {"reader"},
    "dashboard": set(),  # it reads the API only
    "setup-kafka": {"admin"},
}


@pytest.mark.parametrize("name", sorted(CONTAINER_ROLES))
def test_each_container_gets_only_its_principals_credentials(name: str) -> None:
    services = compose()["services"]
    for role in ROLES:
        settings = _settings_of(services[name], role)
        user = principal_user(role)
        if role not in CONTAINER_ROLES[name]:
            with pytest.raises(ValueError, match=f"no password of user '{user}'"):
                settings.kafka_client_config  # noqa: B018
            continue
        password = f"xkafka_{role}_password"
        assert settings.kafka_client_config == {
            "bootstrap.servers": "kafka-1:9092,kafka-2:9092,kafka-3:9092",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
        }, (name, role)
        assert (settings.replication_factor, settings.resolved_min_insync_replicas) == (3, 2)
        jaas = settings.spark_kafka_options["kafka.sasl.jaas.config"]
        assert f'username="{user}" password="{password}"' in jaas
    # What a process of the container connects as when its code picks no role.
    default = _settings_of(services[name]).kafka_role
    assert default == ("reader" if name == "api" else "admin"), (name, default)
    assert not any(
        f"xkafka_{role}_password" in str(value)
        for role in set(ROLES) - CONTAINER_ROLES[name]
        for value in services[name]["environment"].values()
    ), name


def test_the_airflow_connections_use_their_principals() -> None:
    env = compose()["services"]["airflow-scheduler"]["environment"]
    for variable, role in (
        ("AIRFLOW_CONN_KAFKA_DEFAULT", "admin"),
        ("AIRFLOW_CONN_CINESTREAM_KAFKA_GENERATOR", "generator"),
        ("AIRFLOW_CONN_CINESTREAM_DLQ_WATCH", "auditor"),
    ):
        extra = json.loads(env[variable])["extra"]
        assert extra["security.protocol"] == "SASL_PLAINTEXT"
        assert extra["sasl.username"] == principal_user(role), variable
        assert extra["sasl.password"] == f"xkafka_{role}_password", variable


def test_the_acls_are_created_before_anything_connects() -> None:
    services = compose()["services"]
    setup = services["setup-kafka"]
    assert setup["command"] == ["cinestream", "topics", "create"]
    assert setup["restart"] == "no"
    assert all(spec["condition"] == "service_healthy" for spec in setup["depends_on"].values())
    # The Airflow components start after airflow-init, which starts after the set-up.
    for name in ("api", "airflow-init"):
        condition = services[name]["depends_on"]["setup-kafka"]["condition"]
        assert condition == "service_completed_successfully", name


def test_spark_is_not_published_and_authenticates() -> None:
    services = compose()["services"]
    published = sorted(p for s in services.values() for p in s.get("ports", []))
    assert published == ["8000:8000", "8080:8080", "8501:8501"]
    for name, var in (("spark-master", "SPARK_MASTER_OPTS"), ("spark-worker", "SPARK_WORKER_OPTS")):
        environment = services[name]["environment"]
        assert environment[var].split() == ["-Dspark.authenticate=true"], name
        # The secret in Spark's own variable, never in a JVM's argv.
        assert environment["_SPARK_AUTH_SECRET"] == "xspark_auth_secret", name
        assert "xspark_auth_secret" not in environment[var], name
    # Drivers (in the Airflow containers) get the secret through the image's entrypoint.
    assert services["airflow-scheduler"]["environment"]["SPARK_AUTH_SECRET"] == "xspark_auth_secret"
    entrypoint = (REPO / "infra/compose/cinestream-entrypoint.sh").read_text()
    assert "spark.authenticate true" in entrypoint and "spark-defaults.conf" in entrypoint
    assert "umask 077" in entrypoint
    dockerfile = (REPO / "infra/compose/Dockerfile").read_text()
    assert "/opt/cinestream/infra/compose/cinestream-entrypoint.sh" in dockerfile
    assert "from cinestream.jars import jars" in dockerfile


def test_api_and_dashboard_get_only_the_read_only_role() -> None:
    services = compose()["services"]
    for name in ("api", "dashboard"):
        env = services[name]["environment"]
        urls = [v for v in env.values() if "postgresql://" in str(v)]
        assert urls and all(u.startswith("postgresql://cinestream_reader:") for u in urls), urls
        assert not any("xcinestream_db_password" in str(v) for v in env.values()), name
        assert "SPARK_AUTH_SECRET" not in env
    writers = services["airflow-scheduler"]["environment"]["CINESTREAM_DATABASE_URL"]
    assert writers.startswith("postgresql://cinestream:xcinestream_db_password@")


@pytest.mark.parametrize(
    "service", ["api", "dashboard", "airflow-api-server", "airflow-scheduler", "spark-worker"]
)
def test_dependencies_wait_for_health(service: str) -> None:
    depends = compose()["services"][service]["depends_on"]
    assert all("condition" in spec for spec in depends.values())
    for dep in depends:
        if compose()["services"][dep].get("healthcheck"):
            assert depends[dep]["condition"] == "service_healthy"


def test_the_local_airflow_environment_uses_real_options(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    from cinestream.local.airflow import airflow_env

    env = airflow_env(Settings())
    for var in env:
        if var.startswith("AIRFLOW__"):
            assert _airflow_option_exists(var), var
    assert json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]["bootstrap.servers"]
    assert "admin:admin" == env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]  # user:role


def test_the_read_only_role_has_the_local_stacks_settings() -> None:
    from cinestream.store.schema import READER_ROLE_SETTINGS

    script = (REPO / "infra/compose/postgres-init.sh").read_text()
    assert "statement_timeout" in READER_ROLE_SETTINGS
    for name, value in READER_ROLE_SETTINGS.items():
        assert f"ALTER ROLE cinestream_reader SET {name} = '{value}';" in script


def test_the_checkpoint_is_on_hdfs() -> None:
    """namenode and datanode (pinned, healthchecked, on volumes of their own, not published)
    hold the processor's checkpoint; every writer waits for both and none shares a file volume
    for checkpoints any more."""
    services = compose()["services"]
    hdfs = {n: services[n] for n in ("namenode", "datanode")}
    for name, service in hdfs.items():
        assert re.fullmatch(r"apache/hadoop:3\.\d+\.\d+", service["image"]), (name, service)
        assert service["command"] == ["hdfs", name]
        assert service["healthcheck"]["test"], name
        assert "ports" not in service, name
    env = hdfs["namenode"]["environment"]
    assert env == {**hdfs["datanode"]["environment"], "ENSURE_NAMENODE_DIR": "/hadoop/dfs/name"}
    assert env["CORE-SITE.XML_fs.defaultFS"] == "hdfs://namenode:8020"
    assert "-safemode get" in " ".join(hdfs["namenode"]["healthcheck"]["test"])
    # Each daemon's storage directory is the one its volume is mounted on.
    volumes = {n: dict(v.split(":")[::-1] for v in s["volumes"]) for n, s in hdfs.items()}
    name_dir = env["HDFS-SITE.XML_dfs.namenode.name.dir"].removeprefix("file://")
    data_dir = env["HDFS-SITE.XML_dfs.datanode.data.dir"].removeprefix("file://")
    assert volumes["namenode"] == {name_dir: "hdfs-name"}
    assert volumes["datanode"] == {data_dir: "hdfs-data"}
    assert {"hdfs-name", "hdfs-data"} <= set(compose()["volumes"])
    assert "checkpoints" not in compose()["volumes"]

    writer = services["airflow-scheduler"]["environment"]
    checkpoint = writer["CINESTREAM_CHECKPOINT_DIR"]
    assert checkpoint == "hdfs://namenode:8020/cinestream/checkpoints/ratings_stream_processor"
    for name, service in services.items():
        assert not any("checkpoints" in v for v in service.get("volumes", [])), name
        # Airflow's services start after airflow-init, which waits for Kafka and HDFS alike.
        if "kafka-1" in service.get("depends_on", {}) and name.startswith("airflow-"):
            depends = service["depends_on"]
            for dep in ("namenode", "datanode"):
                assert depends[dep]["condition"] == "service_healthy", (name, dep)
    assert "namenode" in services["airflow-init"]["depends_on"]

    # The tasks that read or clear the checkpoint without Spark have Hadoop's shell in the image.
    dockerfile = (REPO / "infra/compose/Dockerfile").read_text()
    assert "jars('hadoop')" in dockerfile

    # The drivers write one replica per block, as the one DataNode holds.
    from cinestream.stream.submit import spark_conf

    settings = Settings(
        checkpoint_dir=checkpoint,
        hdfs_replication=int(writer["CINESTREAM_HDFS_REPLICATION"]),
        spark_master=writer["CINESTREAM_SPARK_MASTER"],
    )
    assert spark_conf(settings)["spark.hadoop.dfs.replication"] == "1"
    assert env["HDFS-SITE.XML_dfs.replication"] == "1"


def test_airflow_has_every_connection_the_local_stack_gives_it(tmp_path: Path) -> None:
    """The DAGs name their connections; compose's Airflow must define each one the local stack
    defines (the DLQ watcher's consumer in the triggerer too, with its own group)."""
    from cinestream.local.airflow import connections
    from cinestream.orchestration.dlq_triage import DLQ_WATCH_GROUP

    wanted = set(connections(Settings(state_dir=tmp_path)))
    services = compose()["services"]
    for name in ("airflow-scheduler", "airflow-triggerer", "airflow-dag-processor"):
        defined = {v for v in services[name]["environment"] if v.startswith("AIRFLOW_CONN_")}
        assert wanted <= defined, (name, sorted(wanted - defined))
    watch = json.loads(
        services["airflow-triggerer"]["environment"]["AIRFLOW_CONN_CINESTREAM_DLQ_WATCH"]
    )
    assert watch["extra"]["group.id"] == DLQ_WATCH_GROUP
    assert watch["extra"]["security.protocol"] == "SASL_PLAINTEXT"
