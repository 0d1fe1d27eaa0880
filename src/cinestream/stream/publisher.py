"""Publication after a commit: the windows whose committed metric is not in the metrics topic
yet, and the invalid records of the store's outbox to the DLQ, each once."""

from __future__ import annotations

import logging
from typing import Any

from cinestream.kafka.produce import new_producer, publish_dlq, publish_metrics
from cinestream.kafka.read import DlqReader
from cinestream.settings import Settings
from cinestream.store import dlq_outbox
from cinestream.store.publication import publish_pending
from cinestream.stream.store_session import StoreSession

log = logging.getLogger("cinestream.processor")


class Publisher:
    """Publishes what the store holds committed but not yet published, with one producer."""

    def __init__(self, settings: Settings, session: StoreSession) -> None:
        self.settings = settings
        self.session = session
        self._producer: Any = None

    def metrics(self) -> int:
        """Publish every window whose committed metric is not in the metrics topic yet."""
        producer = self._get_producer()
        return self.session.call(
            lambda conn: publish_pending(
                conn, lambda m: publish_metrics(self.settings, m, producer)
            )
        )

    def dlq(self) -> int:
        """Publish the invalid records committed to the store's outbox to the DLQ, once."""
        producer = self._get_producer()
        done = self.session.call(
            lambda conn: dlq_outbox.publish_dlq_outbox(
                conn,
                DlqReader(self.settings),
                lambda records: publish_dlq(self.settings, records, producer),
            )
        )
        if done.already_there:
            log.warning(
                "%d invalid records of the store's outbox were already in %s (a publication "
                "cut short before the store recorded it): not published again",
                done.already_there,
                self.settings.dlq_topic,
            )
        return done.published

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)

    def _get_producer(self) -> Any:
        if self._producer is None:
            self._producer = new_producer(self.settings)
        return self._producer
