"""Kafka principals and their ACLs: who may do what on a cluster with SASL and an authorizer.

Each part of cinestream connects as the principal of its role (``CINESTREAM_KAFKA_ROLE``, or the
role its entry point picks with ``Settings.for_kafka_role``). The table is a pure function of the
topic names (:func:`role_grants`); ``up`` (and ``cinestream topics create``) create the users and
the ACLs idempotently, ``doctor`` compares what the cluster holds with it, and a refusal by the
broker is turned into one line naming the principal, the operation and the resource
(:func:`refusal`). The brokers' own user and the admin are super users (``super.users``): they
need no ACL, and no ACL can deny them anything.

This applies where the principals are cinestream's own (:func:`managed`): the cluster profile
and compose. The single-node profile is PLAINTEXT without users or authorizer, and a deployment
that names one user for everything (``CINESTREAM_KAFKA_SASL_USERNAME``) keeps its own ACLs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from cinestream.errors import CinestreamError, ServiceUnavailable

if TYPE_CHECKING:
    from cinestream.settings import Settings

log = logging.getLogger(__name__)

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# The brokers' own SCRAM user (inter-broker and controller traffic): a super user.
BROKER_USER = "kafka-broker"
ADMIN = "admin"
# role -> what it is used by (the README's table says the same).
ROLES: dict[str, str] = {
    ADMIN: "up, topics create/delete, reset, Airflow's cinestream_setup and cinestream_reset, "
    "doctor, status",
    "generator": "cinestream generate, Airflow's generators (cinestream_generate, the backlog)",
    "processor": "the stream processor and the backfill (Spark driver and executors), their "
    "preflight",
    "reader": "the API (/metrics/health, the summary's lag)",
    "auditor": "cinestream audit and validate, Airflow's cinestream_audit, cinestream_dlq and "
    "its DLQ watcher, cinestream_quality",
}
# Consumer groups named in cinestream's code (librdkafka looks their coordinator up even for
# assigned reads) and the prefixes of the ones Spark's Kafka source and batch reader generate
# (``spark-kafka-source-<uuid>...``, ``spark-kafka-relation-<uuid>...``: no groupIdPrefix set).
INSPECTOR_GROUP = "cinestream-inspector"  # kafka.admin: watermarks, offsets by time
READER_GROUP = "cinestream-reader"  # kafka.read: bounded reads (DLQ read-back, quality)
DOCTOR_GROUP = "cinestream-doctor"  # kafka.read.edge_event_times
AUDIT_GROUP = "cinestream-audit"  # audit: the range's ratings
DLQ_WATCH_GROUP = "cinestream-dlq-watch"  # cinestream_dlq's asset watcher (commits its offsets)
SPARK_GROUP_PREFIXES = ("spark-kafka-source-", "spark-kafka-relation-")


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL of a role: ``operation`` on the ``resource`` (topic, group) ``name``
    (``pattern`` literal, or prefixed: every name that starts with it)."""

    resource: str
    name: str
    operation: str
    pattern: str = "LITERAL"

    def __str__(self) -> str:
        what = f"{self.name}*" if self.pattern == "PREFIXED" else self.name
        return f"{self.operation} on {self.resource.lower()} {what}"


def principal_user(role: str) -> str:
    """The SCRAM user of a role: ``cinestream-<role>``."""
    if role not in ROLES:
        raise CinestreamError(f"unknown Kafka role {role!r}: one of {', '.join(ROLES)}")
    return f"cinestream-{role}"


def super_users() -> list[str]:
    """``super.users`` of the brokers: their own user and the admin."""
    return [f"User:{BROKER_USER}", f"User:{principal_user(ADMIN)}"]


def role_grants(role: str, ratings: str, metrics: str, dlq: str) -> list[Grant]:
    """The ACLs a role needs on topics named ``ratings``, ``metrics`` and ``dlq`` (none for the
    admin: a super user). READ implies DESCRIBE in Kafka; DESCRIBE is granted on its own where
    only metadata and offsets are needed."""

    def topic(name: str, *operations: str) -> list[Grant]:
        return [Grant("TOPIC", name, op) for op in operations]

    def groups(*names: str, operation: str = "READ") -> list[Grant]:
        return [Grant("GROUP", name, operation) for name in names]

    if role == ADMIN:
        return []
    if role == "generator":
        return topic(ratings, "WRITE", "DESCRIBE")
    if role == "processor":
        return [
            *topic(ratings, "READ", "DESCRIBE"),
            *topic(metrics, "WRITE", "DESCRIBE"),
            # The store's outbox reads the DLQ back to know what it already published.
            *topic(dlq, "WRITE", "READ", "DESCRIBE"),
            *[Grant("GROUP", prefix, "READ", "PREFIXED") for prefix in SPARK_GROUP_PREFIXES],
            *groups(INSPECTOR_GROUP, READER_GROUP, DOCTOR_GROUP),
        ]
    if role == "reader":
        # /metrics/health and the summary: the end offsets of ratings and of the DLQ.
        return [
            *topic(ratings, "DESCRIBE"),
            *topic(dlq, "DESCRIBE"),
            *groups(INSPECTOR_GROUP, operation="DESCRIBE"),
        ]
    if role == "auditor":
        return [
            *topic(ratings, "READ", "DESCRIBE"),
            *topic(metrics, "READ", "DESCRIBE"),
            *topic(dlq, "READ", "DESCRIBE"),
            *groups(INSPECTOR_GROUP, READER_GROUP, AUDIT_GROUP, DLQ_WATCH_GROUP),
        ]
    raise CinestreamError(f"unknown Kafka role {role!r}: one of {', '.join(ROLES)}")


def acl_table(settings: Settings) -> dict[str, list[Grant]]:
    """Role -> its ACLs for the configured topics."""
    names = (settings.ratings_topic, settings.metrics_topic, settings.dlq_topic)
    return {role: role_grants(role, *names) for role in ROLES}


def binding(user: str, grant: Grant) -> Any:
    """The confluent-kafka ``AclBinding`` of a grant to ``User:<user>`` from any host."""
    from confluent_kafka.admin import AclBinding, AclPermissionType

    return AclBinding(
        grant.resource, grant.name, grant.pattern, f"User:{user}", "*", grant.operation,
        AclPermissionType.ALLOW,
    )  # fmt: skip


def managed(settings: Settings) -> bool:
    """True when the principals are cinestream's own: SASL, and no single user configured."""
    return settings.kafka_uses_sasl and not settings.kafka_sasl_username


def refusal(user: str, operation: str, resource: str, name: str, detail: str = "") -> str:
    """The one line for a principal refused by the authorizer."""
    why = f" ({detail})" if detail else ""
    return (
        f"Kafka refused {operation} on {resource} {name!r} to principal User:{user}{why}: "
        "it has no ACL allowing it; run this part with its own role's credentials, or "
        "`cinestream doctor` to list the ACLs each principal lacks"
    )


class KafkaRefused(ServiceUnavailable):
    """The broker refused this principal an operation (no ACL allows it): :func:`refusal`.
    Not retried: only an ACL (or the right credentials) changes the answer."""

    retryable = False


SECURITY_DISABLED = 54  # what a broker without an authorizer answers to an ACL request
AUTHORIZATION_ERRORS = {29: "topic", 30: "group", 31: "cluster", 53: "transactional id"}


def refused_line(
    connection: Mapping[str, Any],
    error: Any,
    operation: str,
    resource: str,
    name: str,
    group: str = "",
) -> str | None:
    """:func:`refusal` when ``error`` (a KafkaError) is an authorization failure, else None;
    ``connection`` is the client's config (its ``sasl.username``), ``group`` the consumer group
    the client uses (named when that is what was refused)."""
    code = error.code() if isinstance(error, KafkaError) else None
    if code not in AUTHORIZATION_ERRORS:
        return None
    user = str(connection.get("sasl.username") or "ANONYMOUS")
    if AUTHORIZATION_ERRORS[code] == "cluster" and operation == "WRITE":
        # An idempotent producer's id is refused to a principal that may write no topic at all
        # (IDEMPOTENT_WRITE on the cluster, or WRITE on any topic): what it lacks is the WRITE.
        pass
    elif AUTHORIZATION_ERRORS[code] == "cluster":
        operation, resource, name = "CREATE or ALTER", "cluster", "kafka-cluster"
    elif AUTHORIZATION_ERRORS[code] == "group" and group:
        operation, resource, name = "READ", "group", group
    elif AUTHORIZATION_ERRORS[code] != resource:
        operation, resource, name = "the request", AUTHORIZATION_ERRORS[code], "*"
    return refusal(user, operation, resource, name, error.name())


# What a client call raises when the broker refuses it: a KafkaException, or the SystemError
# that wraps a producer's fatal one when it surfaces while a delivery callback runs.
CLIENT_FAILURES = (KafkaException, SystemError)


def refused_by(
    exc: BaseException, connection: Mapping[str, Any], operation: str, resource: str, name: str
) -> str | None:
    """:func:`refused_line` for a client exception (or the KafkaException that caused it: a
    producer's fatal error surfaces from ``flush`` wrapped in a SystemError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KafkaError):
            return refused_line(connection, seen, operation, resource, name)
        if isinstance(seen, KafkaException) and seen.args:
            return refused_line(connection, seen.args[0], operation, resource, name)
        seen = seen.__cause__ or seen.__context__
    return None


# ---------------------------------------------------------------------------------------------
# Provisioning: users and ACLs, idempotent.


def role_password(settings: Settings, role: str) -> str:
    """A role's password as its own processes would get it (generated for a local cluster)."""
    return settings.for_kafka_role(role).kafka_sasl_credentials()[1]


# The one client user of clusters formatted before the roles (it could do everything).
LEGACY_USER = "cinestream"


def provision(settings: Settings) -> list[str]:
    """Users (for a cluster formatted before a role existed) and ACLs of every role, when the
    principals are cinestream's own; returns the ACLs as lines. Idempotent."""
    if not managed(settings):
        return []
    ensure_users(settings)
    lines = ensure_acls(settings)
    if lines:
        # The brokers enforce ACLs now: the all-powerful user of older releases can go. Not
        # before: parts started earlier may still connect as it until the stack restarts.
        ensure_users(settings, retire_legacy=True)
    return lines


def ensure_users(
    settings: Settings, mechanism: str = "", *, retire_legacy: bool = False
) -> list[str]:
    """Create every role's SCRAM user that the cluster lacks (a cluster formatted before a role
    existed); returns the users created. Connects as the brokers' own user, the one principal
    every cluster of cinestream has had since it was formatted."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from cinestream.kafka.admin import client_config

    broker = settings.model_copy(update={"kafka_sasl_username": BROKER_USER})
    try:
        config = client_config(broker, **{"socket.timeout.ms": 10000})
    except ValueError:
        # Compose's set-up job is not given the brokers' password: its users were all created
        # when the storage was formatted.
        log.info("not checking the Kafka users: the brokers' password is not given here")
        return []
    admin: Any = AdminClient(config)  # typed Any: the stubs' unions of result types
    kind = ScramMechanism[(mechanism or settings.kafka_sasl_mechanism).replace("-", "_")]
    users = {principal_user(role): role for role in ROLES}
    try:
        described = admin.describe_user_scram_credentials().result(timeout=30)
    except Exception as exc:  # noqa: BLE001
        raise CinestreamError(f"could not list the Kafka users: {exc}") from exc
    present = {
        user
        for user, description in described.items()
        if any(c.mechanism == kind for c in description.scram_credential_infos)
    }
    if LEGACY_USER in described and not retire_legacy:
        log.info(
            "kept the Kafka user %s of an older release until the brokers enforce ACLs (parts "
            "started before may still use it; `cinestream down` then `cinestream up` restarts "
            "them with one principal per role)",
            LEGACY_USER,
        )
    elif LEGACY_USER in described:
        # Formatted before the roles: drop the all-powerful user (it has no ACL either).
        from confluent_kafka.admin import UserScramCredentialDeletion

        deletion = UserScramCredentialDeletion(LEGACY_USER, kind)
        admin.alter_user_scram_credentials([deletion])[LEGACY_USER].result(timeout=30)
        log.info("deleted the Kafka user %s (one principal per role now)", LEGACY_USER)
    missing = [u for u in users if u not in present]
    if not missing:
        return []
    upserts = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(kind, 4096), role_password(settings, users[user]).encode()
        )
        for user in missing
    ]
    for user, future in admin.alter_user_scram_credentials(upserts).items():
        try:
            future.result(timeout=30)
        except Exception as exc:  # noqa: BLE001
            raise CinestreamError(f"could not create Kafka user {user}: {exc}") from exc
        log.info("created Kafka user %s (%s)", user, kind.name.replace("_", "-"))
    return missing


def ensure_acls(settings: Settings, admin: Any = None) -> list[str]:
    """Create the ACLs of every role for the configured topics (existing ones are kept: creating
    an ACL that exists changes nothing); logs each one and returns them as lines."""
    from cinestream.kafka.admin import admin_client

    admin = admin or admin_client(settings.for_kafka_role(ADMIN))
    lines, bindings = [], []
    for role, grants in acl_table(settings).items():
        user = principal_user(role)
        for grant in grants:
            bindings.append(binding(user, grant))
            lines.append(f"User:{user} ({role}) may {grant}")
    if bindings:
        for acl, future in admin.create_acls(bindings, request_timeout=30).items():
            try:
                future.result(timeout=60)
            except KafkaException as exc:
                if exc.args and getattr(exc.args[0], "code", lambda: None)() == SECURITY_DISABLED:
                    # Brokers started before this release, without an authorizer: they keep
                    # running as they are until restarted with the configuration up writes.
                    log.warning(
                        "the running Kafka brokers have no authorizer (started before it was "
                        "configured): no ACLs created; `cinestream down` then `cinestream up` "
                        "restarts them with StandardAuthorizer and creates them"
                    )
                    return []
                raise CinestreamError(f"could not create the Kafka ACL {acl}: {exc}") from exc
    for line in lines:
        log.info("Kafka ACL: %s", line)
    return lines


def present_grants(settings: Settings, admin: Any = None) -> dict[str, set[Grant]]:
    """User -> the ALLOW ACLs the cluster holds for it (any host)."""
    from confluent_kafka.admin import AclBindingFilter

    from cinestream.kafka.admin import admin_client

    admin = admin or admin_client(settings)
    anything: Any = None  # a filter's "any name / principal / host"
    wanted = AclBindingFilter("ANY", anything, "ANY", anything, anything, "ANY", "ALLOW")
    found: dict[str, set[Grant]] = {}
    for acl in admin.describe_acls(wanted, request_timeout=15).result(timeout=30):
        if acl.host != "*":
            continue
        user = acl.principal.removeprefix("User:")
        found.setdefault(user, set()).add(
            Grant(acl.restype.name, acl.name, acl.operation.name, acl.resource_pattern_type.name)
        )
    return found


def missing_grants(
    table: Mapping[str, Iterable[Grant]], present: Mapping[str, set[Grant]]
) -> dict[str, list[Grant]]:
    """Role -> the ACLs of ``table`` that ``present`` (user -> grants) lacks. An ALL grant
    covers every operation; READ, WRITE (and ALL) cover DESCRIBE, as Kafka's authorizer has it."""
    implied = {"DESCRIBE": {"READ", "WRITE", "DELETE", "ALTER"}}
    missing: dict[str, list[Grant]] = {}
    for role, grants in table.items():
        held = present.get(principal_user(role), set())
        for grant in grants:
            ops = {grant.operation, "ALL", *implied.get(grant.operation, set())}
            if not any(Grant(grant.resource, grant.name, op, grant.pattern) in held for op in ops):
                missing.setdefault(role, []).append(grant)
    return missing
