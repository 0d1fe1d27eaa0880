"""Kafka topics, offsets and readiness through confluent-kafka's AdminClient and Consumer."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cinestream.errors import CinestreamError, ServiceUnavailable
from cinestream.net import host_port, port_open
from cinestream.schemas import DLQ_MAX_MESSAGE_BYTES, RATINGS_MAX_MESSAGE_BYTES
from cinestream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A cinestream topic: name, partitions, topic configs."""

    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The three topics of the configuration with their partitions and configs."""
    # Replicated topics accept a write once min.insync.replicas copies have it (acks=all).
    durable = (
        {"min.insync.replicas": str(settings.resolved_min_insync_replicas)}
        if settings.replication_factor > 1
        else {}
    )
    # `ratings` takes records up to Kafka's default size whatever the broker's; the DLQ takes any
    # of them as a DLQ record: its key and a bounded value (schemas.DLQ_MAX_MESSAGE_BYTES).
    return [
        # Ratings keep their event time as record timestamp (the backfill looks offsets up by
        # it), and Kafka's time retention counts from that timestamp: with the broker's 7 days,
        # an import of older history would be deleted at the next retention check, before the
        # processor reads it. So no time retention on `ratings`; bound it by size if needed.
        TopicSpec(
            settings.ratings_topic,
            settings.ratings_partitions,
            {
                "max.message.bytes": str(RATINGS_MAX_MESSAGE_BYTES),
                "retention.ms": "-1",
                **durable,
            },
        ),
        # Last value per window key is the window's metric: compaction keeps exactly that.
        TopicSpec(
            settings.metrics_topic,
            settings.metrics_partitions,
            {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "600000",
                **durable,
            },
        ),
        TopicSpec(
            settings.dlq_topic,
            settings.dlq_partitions,
            {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES), **durable},
        ),
    ]


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The connection (``Settings.kafka_client_config``: servers, security, credentials) and
    common settings; connection errors are reported by us, not logged per retry."""
    return {**settings.kafka_client_config, "log_level": 0, **extra}


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient for the configured bootstrap servers."""
    return AdminClient(client_config(settings, **{"socket.timeout.ms": 5000}))


CONNECTION_HELP = (
    "set CINESTREAM_KAFKA_SECURITY_PROTOCOL, CINESTREAM_KAFKA_SASL_USERNAME and "
    "CINESTREAM_KAFKA_SASL_PASSWORD (a local cluster's are in `cinestream status --json`, "
    "kafka_client_config)"
)


def unavailable(
    settings: Settings, exc: BaseException | str, errors: Sequence[KafkaError] = ()
) -> ServiceUnavailable:
    """The one-line error for a Kafka that does not answer, with what to do; ``errors`` (the
    client's error callbacks) tell refused credentials and a listener that wants SASL apart."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    if refused:
        user = settings.resolved_kafka_sasl_username
        detail = refused[0].str().split(": ", 1)[-1]
        return ServiceUnavailable(
            f"{where} refused the credentials of user {user!r} ({detail})",
            "check CINESTREAM_KAFKA_SASL_USERNAME and CINESTREAM_KAFKA_SASL_PASSWORD "
            "(`cinestream status --json` shows kafka_client_config)",
        )
    listening = any(port_open(*host_port(h)) for h in settings.kafka_hosts)
    if listening and not settings.kafka_uses_sasl and not errors:
        protocol = settings.resolved_kafka_security_protocol
        return ServiceUnavailable(
            f"{where} accepts connections but not a {protocol} client: its listener requires "
            "authentication (SASL) or TLS",
            CONNECTION_HELP,
        )
    return ServiceUnavailable(
        f"{where} is unavailable ({exc}); start it with `cinestream up` or set "
        "CINESTREAM_KAFKA_BOOTSTRAP",
        "cinestream up",
    )


def list_topics(settings: Settings, timeout: float = 5.0) -> dict[str, Any]:
    """Topic name -> metadata of every topic on the cluster."""
    errors: list[KafkaError] = []
    client = AdminClient(
        client_config(settings, **{"socket.timeout.ms": 5000, "error_cb": errors.append})
    )
    try:
        return client.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        client.poll(0)  # serves the error callbacks: refused credentials say so there
        raise unavailable(settings, exc.args[0], errors) from exc


def cluster_brokers(settings: Settings, timeout: float = 5.0) -> set[int]:
    """The ids of the brokers the cluster's metadata lists (empty when it does not answer)."""
    try:
        return set(admin_client(settings).list_topics(timeout=timeout).brokers)
    except KafkaException:
        return set()


def broker_ready(settings: Settings, timeout: float = 2.0) -> bool:
    """True when the bootstrap broker accepts connections and answers a metadata request."""
    if not any(port_open(*host_port(h)) for h in settings.kafka_hosts):
        return False
    try:
        list_topics(settings, timeout)
        return True
    except ServiceUnavailable:
        return False


def create_topics(settings: Settings, admin: AdminClient | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Existing ones are left alone.

    ``admin`` lets Airflow pass the client of its Kafka connection (KafkaAdminClientHook).
    """
    admin = admin or admin_client(settings)
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0]) from exc
    wanted = [
        NewTopic(s.name, s.partitions, settings.replication_factor, config=s.config)
        for s in topic_specs(settings)
        if s.name not in existing
    ]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=30)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent create won
                _raise_if_refused(settings, exc.args[0], "CREATE", name)
                raise CinestreamError(f"could not create topic {name}: {exc.args[0]}") from exc
    _wait_for(settings, lambda topics: all(_led(topics, t.topic) for t in wanted), "created")
    _wait_on_every_broker(settings, [t.topic for t in wanted])
    return created


def delete_topics(
    settings: Settings, timeout_s: float = 60, admin: AdminClient | None = None
) -> list[str]:
    """Delete the three topics and wait until the broker no longer lists them."""
    names = [s.name for s in topic_specs(settings)]
    present = [n for n in names if n in list_topics(settings)]
    if not present:
        return []
    admin = admin or admin_client(settings)
    for name, future in admin.delete_topics(present, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != 3:  # UNKNOWN_TOPIC_OR_PART: already gone
                _raise_if_refused(settings, exc.args[0], "DELETE", name)
                raise CinestreamError(f"could not delete topic {name}: {exc.args[0]}") from exc
    _wait_for(settings, lambda topics: not any(n in topics for n in present), "deleted", timeout_s)
    log.info("deleted topics %s", ", ".join(present))
    return present


def _raise_if_refused(settings: Settings, error: Any, operation: str, topic: str) -> None:
    """Raise the one-line refusal (kafka/acls.py) when ``error`` is an authorization failure."""
    from cinestream.kafka.acls import KafkaRefused, refused_line

    line = refused_line(settings.kafka_client_config, error, operation, "topic", topic)
    if line is not None:
        raise KafkaRefused(line)


def refused_describe(settings: Settings, topic: str) -> None:
    """For a topic the metadata does not list: raise the refusal when it exists but this
    principal may not describe it (Kafka leaves such topics out of a full listing)."""
    errors: list[KafkaError] = []
    client = AdminClient(
        client_config(settings, **{"socket.timeout.ms": 5000, "error_cb": errors.append})
    )
    try:
        listed = client.list_topics(topic, timeout=5).topics.get(topic)
    except KafkaException:
        return
    if listed is not None and listed.error is not None:
        _raise_if_refused(settings, listed.error, "DESCRIBE", topic)


def _led(topics: dict[str, Any], name: str) -> bool:
    """The topic is listed and every one of its partitions has a leader."""
    listed = topics.get(name)
    return (
        listed is not None
        and listed.error is None
        and bool(listed.partitions)
        and all(p.leader >= 0 for p in listed.partitions.values())
    )


def _wait_on_every_broker(settings: Settings, names: list[str], timeout_s: float = 30) -> None:
    """Wait until each broker's own metadata lists ``names`` with their leaders.

    A new topic (and the ACLs written before it) reach each broker through the metadata log a
    moment apart: until then a client whose request lands on a broker that lags is told the topic
    does not exist, or that the leader it names is not one. Asking each broker on its own (a
    client bootstrapped from it alone) makes "created" mean usable from anywhere.
    """
    deadline = time.monotonic() + timeout_s
    try:
        brokers = admin_client(settings).list_topics(timeout=10).brokers.values()
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0]) from exc
    for broker in brokers:
        address = f"{broker.host}:{broker.port}"
        while True:
            # A new client each time: its first request can only go to its one bootstrap broker
            # (a client that has learned the cluster may ask any broker, one already up to date).
            one = AdminClient(
                client_config(settings, **{"bootstrap.servers": address, "socket.timeout.ms": 5000})
            )
            try:
                if all(_led(one.list_topics(timeout=5).topics, n) for n in names):
                    break
            except KafkaException:
                pass  # asked again until the deadline
            if time.monotonic() > deadline:
                raise CinestreamError(
                    f"topics {', '.join(names)} were created but broker {broker.id} ({address}) "
                    f"did not list them with leaders within {timeout_s:.0f}s"
                )
            time.sleep(0.2)


def _wait_for(settings: Settings, done: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done(list_topics(settings)):
        if time.monotonic() > deadline:
            raise CinestreamError(f"topics were not {what} within {timeout_s:.0f}s")
        time.sleep(0.2)


def topic_id(settings: Settings, topic: str) -> str | None:
    """The topic's id (changes when it is deleted and recreated), or None if it is missing.
    Any other failure (a timeout, a leader moving) is a CinestreamError, never taken for a
    missing topic: callers compare ids to tell a recreated topic from the one they know."""
    from confluent_kafka import TopicCollection

    admin = admin_client(settings)
    futures = admin.describe_topics(TopicCollection([topic]))
    try:
        description = futures[topic].result()
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise CinestreamError(f"could not describe topic {topic} ({exc}); is Kafka up?") from exc
    return str(description.topic_id)


@dataclass(frozen=True)
class PartitionOffsets:
    """Low and high watermark of one partition."""

    partition: int
    low: int
    high: int

    @property
    def messages(self) -> int:
        """Records currently in the partition."""
        return self.high - self.low


def offsets_for_time(settings: Settings, topic: str, timestamp_ms: int) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is at or after ``timestamp_ms``
    (the end of the partition when there is none)."""
    parts = partition_offsets(settings, topic)
    consumer = Consumer(
        client_config(settings, **{"group.id": "cinestream-inspector", "enable.auto.commit": False})
    )
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p.partition, timestamp_ms) for p in parts], timeout=10
        )
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0]) from exc
    finally:
        consumer.close()
    ends = {p.partition: p.high for p in parts}
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


def partition_offsets(settings: Settings, topic: str) -> list[PartitionOffsets]:
    """Low and high watermarks of every partition of ``topic`` (empty list if it is missing)."""
    topics = list_topics(settings)
    if topic not in topics:
        refused_describe(settings, topic)
        return []
    consumer = Consumer(
        client_config(settings, **{"group.id": "cinestream-inspector", "enable.auto.commit": False})
    )
    deadline = time.monotonic() + WATERMARK_WAIT_S  # one bound for the whole topic
    try:
        return [
            PartitionOffsets(p, *_watermarks(consumer, TopicPartition(topic, p), deadline))
            for p in sorted(topics[topic].partitions)
        ]
    except KafkaException as exc:
        raise unavailable(settings, exc.args[0]) from exc
    finally:
        consumer.close()


# Answers a broker gives while a partition's leadership is moving (a topic just created, a broker
# restarted): the metadata the client holds names a leader that has not yet taken over.
_LEADERSHIP_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


# How long partition_offsets asks again while leadership moves, for all partitions together.
WATERMARK_WAIT_S = 20.0


def _watermarks(consumer: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """Low and high watermark of one partition, asked again while its leadership is moving
    (until the monotonic ``deadline``); any other error, or one past the deadline, is raised."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=10)
            return low, high
        except KafkaException as exc:
            if exc.args[0].code() not in _LEADERSHIP_MOVING or time.monotonic() > deadline:
                raise
            log.info(
                "partition %s-%d: %s; asking again",
                partition.topic,
                partition.partition,
                exc.args[0].name(),
            )
            time.sleep(0.5)
