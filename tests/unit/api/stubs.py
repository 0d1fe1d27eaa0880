"""Stand-ins for the API's store reader and Kafka view, so routes run without any service."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from fastapi.testclient import TestClient

from cinestream.api.deps import get_kafka, get_reader, get_settings
from cinestream.api.main import create_app
from cinestream.settings import Settings


class StubReader:
    """Answers every read with an empty result and remembers what was asked."""

    def __init__(self) -> None:
        self.keys: list[Any] = []

    def read(self, key: Hashable, _query: Callable[[Any], Any]) -> bytes:
        self.keys.append(key)
        return b"[]"


class StubKafka:
    """A Kafka view that is down."""

    def snapshot(self) -> dict[str, Any]:
        return {"up": False, "error": "not in a unit test"}


def client_for(settings: Settings, reader: Any) -> TestClient:
    """A client of the routes with these stand-ins (no lifespan: no pool, listener or Kafka)."""
    app = create_app(settings)
    app.dependency_overrides[get_settings] = lambda: settings
    app.dependency_overrides[get_reader] = lambda: reader
    app.dependency_overrides[get_kafka] = lambda: StubKafka()
    return TestClient(app, raise_server_exceptions=False)  # a defect shows as its 500
