"""The Kafka principals' ACL table (kafka/acls.py): a pure function of the topic names."""

from __future__ import annotations

import pytest

from cinestream.kafka import acls
from cinestream.kafka.acls import Grant, missing_grants, role_grants
from cinestream.settings import Settings

TOPICS = ("ratings", "metrics", "ratings_dlq")


def topic_ops(grants: list[Grant]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for g in grants:
        if g.resource == "TOPIC":
            found.setdefault(g.name, set()).add(g.operation)
    return found


def groups(grants: list[Grant]) -> set[tuple[str, str, str]]:
    return {(g.name, g.pattern, g.operation) for g in grants if g.resource == "GROUP"}


def test_the_generator_may_write_ratings_only() -> None:
    grants = role_grants("generator", *TOPICS)
    assert topic_ops(grants) == {"ratings": {"WRITE", "DESCRIBE"}}
    assert not groups(grants)


def test_the_processor_reads_ratings_and_writes_metrics_and_the_dlq() -> None:
    grants = role_grants("processor", *TOPICS)
    assert topic_ops(grants) == {
        "ratings": {"READ", "DESCRIBE"},
        "metrics": {"WRITE", "DESCRIBE"},
        # The store's outbox reads the DLQ back to know what it already published.
        "ratings_dlq": {"WRITE", "READ", "DESCRIBE"},
    }
    # Spark's generated group ids (no groupIdPrefix configured) and cinestream's own readers.
    assert groups(grants) == {
        ("spark-kafka-source-", "PREFIXED", "READ"),
        ("spark-kafka-relation-", "PREFIXED", "READ"),
        ("cinestream-inspector", "LITERAL", "READ"),
        ("cinestream-reader", "LITERAL", "READ"),
        ("cinestream-doctor", "LITERAL", "READ"),
    }
    assert "WRITE" not in topic_ops(grants)["ratings"]


def test_the_reader_only_describes_what_health_and_lag_need() -> None:
    grants = role_grants("reader", *TOPICS)
    assert topic_ops(grants) == {"ratings": {"DESCRIBE"}, "ratings_dlq": {"DESCRIBE"}}
    assert groups(grants) == {("cinestream-inspector", "LITERAL", "DESCRIBE")}


def test_the_auditor_reads_every_topic_and_writes_none() -> None:
    grants = role_grants("auditor", *TOPICS)
    assert topic_ops(grants) == {name: {"READ", "DESCRIBE"} for name in TOPICS}
    assert groups(grants) == {
        (g, "LITERAL", "READ")
        for g in ("cinestream-inspector", "cinestream-reader", "cinestream-audit")
        + ("cinestream-dlq-watch",)
    }


def test_the_admin_is_a_super_user_without_acls() -> None:
    assert role_grants("admin", *TOPICS) == []
    assert acls.super_users() == ["User:kafka-broker", "User:cinestream-admin"]


def test_no_role_but_the_admin_may_create_delete_or_alter() -> None:
    for role in acls.ROLES:
        for grant in role_grants(role, *TOPICS):
            assert grant.operation in {"READ", "WRITE", "DESCRIBE"}, (role, grant)
            assert grant.pattern == "LITERAL" or grant.name.startswith("spark-kafka-"), grant


def test_the_table_follows_the_configured_topic_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(state_dir=tmp_path, ratings_topic="r", metrics_topic="m", dlq_topic="d")
    table = acls.acl_table(settings)
    assert set(table) == set(acls.ROLES)
    assert topic_ops(table["processor"]) == {
        "r": {"READ", "DESCRIBE"},
        "m": {"WRITE", "DESCRIBE"},
        "d": {"WRITE", "READ", "DESCRIBE"},
    }


def test_bindings_name_the_roles_principal() -> None:
    binding = acls.binding("cinestream-generator", Grant("TOPIC", "ratings", "WRITE"))
    assert binding.principal == "User:cinestream-generator" and binding.host == "*"
    assert (binding.restype.name, binding.name, binding.operation.name) == (
        "TOPIC",
        "ratings",
        "WRITE",
    )
    assert binding.resource_pattern_type.name == "LITERAL"
    assert binding.permission_type.name == "ALLOW"


def test_missing_grants_counts_what_kafka_implies() -> None:
    table = {"reader": role_grants("reader", *TOPICS)}
    assert missing_grants(table, {}) == table
    held = {
        "cinestream-reader": {
            Grant("TOPIC", "ratings", "READ"),  # READ implies DESCRIBE
            Grant("TOPIC", "ratings_dlq", "ALL"),
        }
    }
    assert missing_grants(table, held) == {
        "reader": [Grant("GROUP", "cinestream-inspector", "DESCRIBE")]
    }


def test_principals_and_unknown_roles() -> None:
    assert acls.principal_user("processor") == "cinestream-processor"
    with pytest.raises(Exception, match="unknown Kafka role 'spark'"):
        acls.principal_user("spark")


def test_a_refusal_names_principal_operation_and_resource() -> None:
    from confluent_kafka import KafkaError

    connection = {"sasl.username": "cinestream-reader"}
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    line = acls.refused_line(connection, refused, "WRITE", "topic", "ratings")
    assert line is not None and "\n" not in line
    assert line.startswith(
        "Kafka refused WRITE on topic 'ratings' to principal User:cinestream-reader "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )
    # A group refusal names the group; anything else is not a refusal.
    group = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    line = acls.refused_line(connection, group, "READ", "topic", "ratings", "cinestream-audit")
    assert line is not None and "READ on group 'cinestream-audit'" in line
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    assert acls.refused_line(connection, timeout, "WRITE", "topic", "ratings") is None


def test_only_cinestreams_own_principals_are_managed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert not acls.managed(Settings(state_dir=tmp_path))  # single profile: PLAINTEXT
    sasl = Settings(state_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT")
    assert acls.managed(sasl)
    assert not acls.managed(sasl.model_copy(update={"kafka_sasl_username": "someone"}))


class _Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def result(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


class _Admin:
    """An AdminClient stand-in: records the ACLs asked for, answers with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.asked: list[object] = []

    def create_acls(self, bindings: list[object], request_timeout: float) -> dict[object, _Future]:
        self.asked += bindings
        return {b: _Future(self.error) for b in bindings}


def test_ensure_acls_asks_for_every_roles_acls_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(state_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT")
    fake = _Admin()
    lines = acls.ensure_acls(settings, admin=fake)
    table = acls.acl_table(settings)
    assert len(fake.asked) == len(lines) == sum(len(g) for g in table.values())
    assert "User:cinestream-generator (generator) may WRITE on topic ratings" in lines
    assert {b.principal for b in fake.asked} == {  # type: ignore[attr-defined]
        f"User:cinestream-{role}" for role in ("generator", "processor", "reader", "auditor")
    }


def test_brokers_without_an_authorizer_are_a_warning_not_a_failure(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import KafkaError, KafkaException

    settings = Settings(state_dir=tmp_path, kafka_security_protocol="SASL_PLAINTEXT")
    disabled = KafkaException(KafkaError(acls.SECURITY_DISABLED))
    assert acls.ensure_acls(settings, admin=_Admin(disabled)) == []
    assert "no authorizer" in caplog.text
    refused = KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))
    with pytest.raises(Exception, match="could not create the Kafka ACL"):
        acls.ensure_acls(settings, admin=_Admin(refused))


def test_a_producers_fatal_refusal_is_found_under_the_systemerror() -> None:
    from confluent_kafka import KafkaError, KafkaException

    fatal = KafkaException(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED))
    try:
        try:
            raise fatal
        except KafkaException as exc:
            raise SystemError("callback") from exc
    except SystemError as wrapped:
        line = acls.refused_by(
            wrapped, {"sasl.username": "cinestream-reader"}, "WRITE", "topic", "ratings"
        )
    assert line is not None
    assert line.startswith(
        "Kafka refused WRITE on topic 'ratings' to principal User:cinestream-reader"
    )
    assert acls.refused_by(ValueError("x"), {}, "WRITE", "topic", "ratings") is None
