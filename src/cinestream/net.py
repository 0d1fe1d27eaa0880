"""Plain TCP reachability, shared by the Kafka admin and the local stack."""

from __future__ import annotations

import socket


def host_port(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port`` (the first of a comma-separated list) as a pair."""
    first = address.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or default_host, int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
