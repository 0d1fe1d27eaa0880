"""Plain TCP reachability, shared by the Kafka admin and the local stack; URLs said without their
passwords."""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit


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


_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)")


def redact_url(url: str) -> str:
    """A libpq URL or keyword string with every password shown as ``***``: in the user-info
    (``user:secret@``), as a query parameter (``?password=secret``) or as a keyword
    (``host=db password=secret``)."""
    text = _PASSWORD_PARAM.sub(lambda m: m.group(1) + "***", url)
    if "://" in text:
        parts = urlsplit(text)
        if parts.password:
            user = parts.username or ""
            host = parts.netloc.rsplit("@", 1)[-1]
            text = parts._replace(netloc=f"{user}:***@{host}").geturl()
    return text
