"""SASL for Kafka's Java clients (Spark's connector, the brokers): the login modules cinestream
knows and the JAAS line that carries a user's credentials."""

from __future__ import annotations

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
