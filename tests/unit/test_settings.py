from __future__ import annotations

import pytest
from pydantic import ValidationError

from cinestream.settings import Settings


@pytest.fixture(autouse=True)
def _no_cinestream_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults are what these tests check: nothing from the caller's environment."""
    import os

    for key in list(os.environ):
        if key.startswith("CINESTREAM_"):
            monkeypatch.delenv(key)


def test_defaults_target_the_local_stack(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", str(tmp_path))
    s = Settings()
    assert (s.ratings_topic, s.metrics_topic, s.dlq_topic) == ("ratings", "metrics", "ratings_dlq")
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.checkpoint_dir.startswith("file://") and str(tmp_path) in s.checkpoint_dir
    url = s.resolved_database_url
    assert url.startswith("postgresql://cinestream:") and url.endswith("@127.0.0.1:5432/cinestream")
    assert url == Settings().resolved_database_url  # the generated password is stable
    assert "***" in s.redacted_database_url()


def test_window_types_from_env(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", "tumbling_1min, sliding_5min_1min")
    assert [w.name for w in Settings().windows] == ["tumbling_1min", "sliding_5min_1min"]


@pytest.mark.parametrize("value", ["sliding_5min_1min", "tumbling_7x", ""])
def test_bad_window_types_fail_at_start(monkeypatch, value: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", value)
    with pytest.raises(ValidationError):
        Settings()


def test_external_database_url_wins(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_DATABASE_URL", "postgresql://u:p@db:5432/x")
    assert Settings().resolved_database_url == "postgresql://u:p@db:5432/x"
    assert not Settings().uses_local_database


def test_an_empty_state_dir_is_refused_not_taken_as_the_current_directory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_STATE_DIR", "")
    with pytest.raises(ValueError, match="unset CINESTREAM_STATE_DIR"):
        Settings()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr%40t@db:5432/cinestream",
        "postgresql://app@db:5432/cinestream?sslmode=require&password=s3cr%40t",
        "postgresql:///cinestream?host=/run/pg&PASSWORD=s3cr%40t",
        "host=db port=5432 dbname=cinestream user=app password=s3cr%40t",
        "host=db dbname=cinestream password = 's3cr%40t with space' user=app",
    ],
)
def test_no_form_of_database_url_shows_its_password(monkeypatch, url: str) -> None:  # type: ignore[no-untyped-def]
    from cinestream.net import redact_url

    monkeypatch.setenv("CINESTREAM_DATABASE_URL", url)
    for shown in (redact_url(url), Settings().redacted_database_url()):
        assert "s3cr" not in shown and "***" in shown
        assert "db" in shown or "/run/pg" in shown  # still says where


def test_connection_errors_name_the_server_not_the_password() -> None:
    from cinestream.errors import ServiceUnavailable
    from cinestream.store.connection import connect

    with pytest.raises(ServiceUnavailable) as info:
        connect("host=127.0.0.1 port=1 dbname=x user=u password=s3cr3t", timeout=1)
    assert "s3cr3t" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_batches_are_capped_by_cells_not_by_what_they_contain(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert Settings().batch_ratings_limit == 500_000  # one tumbling type: the offsets cap rules
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", "tumbling_1min,sliding_1h_1min")
    s = Settings()
    assert s.cells_per_rating == 61
    assert s.batch_ratings_limit == 2_000_000 // 61
    monkeypatch.setenv("CINESTREAM_MAX_BATCH_CELLS", "61000")
    assert Settings().batch_ratings_limit == 1_000


def test_spark_gets_room_for_its_rounding_but_never_past_the_cells_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Spark rounds each partition's share down: partitions - 1 more keeps a backlog of exactly
    # two limits in two batches.
    assert Settings().spark_max_offsets_per_trigger(3) == 500_002
    assert Settings().spark_max_offsets_per_trigger(1) == 500_000
    monkeypatch.setenv("CINESTREAM_WINDOW_TYPES", "tumbling_1min,sliding_1h_1min")
    assert Settings().spark_max_offsets_per_trigger(3) == 2_000_000 // 61  # memory rules
    monkeypatch.setenv("CINESTREAM_MAX_OFFSETS_PER_TRIGGER", "1000")
    assert Settings().spark_max_offsets_per_trigger(6) == 1_005


def test_retention(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert Settings().retention_ms == 3 * 86_400_000
    monkeypatch.setenv("CINESTREAM_RETENTION", "10min")
    with pytest.raises(ValidationError, match="at least 1h"):
        Settings()


def test_the_single_profile_connects_in_plaintext(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(state_dir=tmp_path)
    assert s.profile == "single" and not s.cluster
    assert s.kafka_client_config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert s.spark_kafka_options == {
        "kafka.bootstrap.servers": "127.0.0.1:9092",
        "kafka.security.protocol": "PLAINTEXT",
    }
    assert (s.replication_factor, s.resolved_min_insync_replicas, s.spark_master) == (
        1,
        1,
        "local[2]",
    )


def test_the_cluster_profile_recorded_in_the_state_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "profile").write_text("cluster\n")
    s = Settings(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19092")
    assert s.cluster
    # One local address names the first of three brokers; replication 3, min ISR 2, SASL.
    assert s.kafka_bootstrap == "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094"
    assert (s.replication_factor, s.resolved_min_insync_replicas) == (3, 2)
    assert (s.spark_master, s.spark_cores_max) == ("spark://127.0.0.1:7077", 1)
    config = s.kafka_client_config  # generates the password on first use
    # Nothing chosen: the admin principal (the CLI's operator); each role has its own user.
    secret = tmp_path / "secrets" / "kafka_cinestream-admin_password"
    password = secret.read_text()
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert (config["sasl.mechanism"], config["sasl.username"]) == (
        "SCRAM-SHA-512",
        "cinestream-admin",
    )
    assert config["sasl.password"] == password and len(password) >= 32
    assert secret.stat().st_mode & 0o077 == 0
    assert s.spark_kafka_options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="cinestream-admin" password="{password}";'
    )
    assert s.kafka_description.endswith("(SASL_PLAINTEXT, SCRAM-SHA-512 as cinestream-admin)")
    processor = s.for_kafka_role("processor").kafka_client_config
    assert processor["sasl.username"] == "cinestream-processor"
    assert processor["sasl.password"] == (
        (tmp_path / "secrets" / "kafka_cinestream-processor_password").read_text()
    )
    assert processor["sasl.password"] != password
    # Explicit settings win over the profile's defaults.
    s = Settings(state_dir=tmp_path, replication_factor=2, spark_master="local[2]")
    assert (s.replication_factor, s.resolved_min_insync_replicas, s.spark_master) == (
        2,
        1,
        "local[2]",
    )


def test_remote_sasl_needs_credentials_and_quotes_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(
        state_dir=tmp_path,
        kafka_bootstrap="b-1.example:9096",
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="plain",
        kafka_ssl_ca_location="/etc/ca.pem",
    )
    with pytest.raises(ValueError, match="no password of user 'cinestream-admin'"):
        s.kafka_client_config  # noqa: B018
    # The role principals' passwords given (compose): each role connects as its own user.
    given = s.model_copy(update={"kafka_sasl_passwords": {"cinestream-reader": "r"}})
    reader = given.for_kafka_role("reader").kafka_client_config
    assert (reader["sasl.username"], reader["sasl.password"]) == ("cinestream-reader", "r")
    with pytest.raises(ValueError, match="CINESTREAM_KAFKA_SASL_PASSWORDS"):
        given.for_kafka_role("processor").kafka_client_config  # noqa: B018
    s = s.model_copy(update={"kafka_sasl_username": "u", "kafka_sasl_password": 'p"w\\x'})
    assert s.kafka_client_config["ssl.ca.location"] == "/etc/ca.pem"
    options = s.spark_kafka_options
    assert options["kafka.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="u" password="p\\"w\\\\x";'
    )
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.location"] == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("field", "value"),
    [("profile", "cloud"), ("kafka_security_protocol", "TLS"), ("kafka_sasl_mechanism", "GSSAPI")],
)
def test_bad_kafka_security_settings_fail_at_start(tmp_path, field: str, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError):
        Settings(state_dir=tmp_path, **{field: value})


def test_daemon_jvm_options_are_split_as_a_shell_would(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CINESTREAM_DAEMON_JVM_OPTS", "-XX:TieredStopAtLevel=1 '-Dname=a b'")
    assert Settings().daemon_jvm_args == ["-XX:TieredStopAtLevel=1", "-Dname=a b"]
    monkeypatch.setenv("CINESTREAM_DAEMON_JVM_OPTS", "-Dname='a b")
    with pytest.raises(ValidationError, match="No closing quotation"):
        Settings()
