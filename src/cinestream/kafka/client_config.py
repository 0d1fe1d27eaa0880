"""How cinestream's clients connect to Kafka: librdkafka's settings, the Spark connector's
``kafka.`` options, the SASL user and password of the configured principal, and the JAAS line
Kafka's Java clients (Spark's connector, the brokers) take them in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cinestream.local.secrets import stored_secret

if TYPE_CHECKING:
    from cinestream.settings import Settings

SASL_LOGIN_MODULES = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


def jaas_config(mechanism: str, user: str, password: str) -> str:
    """A JAAS login line for Kafka's Java clients (Spark's connector, the brokers)."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    module = SASL_LOGIN_MODULES[mechanism]
    return f"{module} required username={quoted(user)} password={quoted(password)};"


def sasl_credentials(settings: Settings) -> tuple[str, str]:
    """(user, password) of the clients: configured, else the local cluster's generated ones."""
    user = settings.resolved_kafka_sasl_username
    password = settings.kafka_sasl_password or settings.kafka_sasl_passwords.get(user, "")
    if not password and settings.uses_local_kafka:
        password = stored_secret(settings.state_dir, f"kafka_{user}_password")
    if not user or not password:
        raise ValueError(
            f"Kafka uses SASL but no password of user {user!r} is set: set "
            "CINESTREAM_KAFKA_SASL_PASSWORDS (a JSON object user -> password) or "
            "CINESTREAM_KAFKA_SASL_USERNAME / CINESTREAM_KAFKA_SASL_PASSWORD"
        )
    return user, password


def librdkafka(settings: Settings) -> dict[str, str]:
    """The librdkafka settings any client needs to connect (``cinestream status --json``)."""
    config = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.resolved_kafka_security_protocol,
    }
    if settings.kafka_uses_sasl:
        user, password = sasl_credentials(settings)
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": user,
            "sasl.password": password,
        }
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = settings.kafka_ssl_ca_location
    return config


def spark_options(settings: Settings) -> dict[str, str]:
    """The same connection as the Spark Kafka connector's ``kafka.``-prefixed options (derived
    from :func:`librdkafka`'s, so both clients always connect alike)."""
    config = librdkafka(settings)
    options = {f"kafka.{key}": config[key] for key in ("bootstrap.servers", "security.protocol")}
    if "sasl.username" in config:
        mechanism = config["sasl.mechanism"]
        options |= {
            "kafka.sasl.mechanism": mechanism,
            "kafka.sasl.jaas.config": jaas_config(
                mechanism, config["sasl.username"], config["sasl.password"]
            ),
        }
    if "ssl.ca.location" in config:
        options |= {
            "kafka.ssl.truststore.type": "PEM",
            "kafka.ssl.truststore.location": config["ssl.ca.location"],
        }
    return options
