"""The processor's housekeeping: every few minutes, the per-window detail of windows that ended
before now minus ``CINESTREAM_RETENTION`` and that the watermark has closed is pruned
(``window_metrics`` stays)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg

from cinestream.schemas import format_time
from cinestream.settings import Settings
from cinestream.store.retention import prune_detail
from cinestream.stream.store_session import StoreSession

log = logging.getLogger("cinestream.processor")

# How often a running processor prunes per-window detail older than CINESTREAM_RETENTION.
PRUNE_EVERY_S = 600


class Housekeeping:
    """Prunes at most every :data:`PRUNE_EVERY_S` seconds, after a commit."""

    def __init__(
        self,
        settings: Settings,
        session: StoreSession,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.session = session
        self.clock = clock
        self._pruned_at = 0.0

    def after_commit(self) -> None:
        if self.clock() - self._pruned_at >= PRUNE_EVERY_S:
            self.prune()

    def prune(self) -> None:
        """Delete per-window detail older than the retention (a failure waits for the next
        batch: housekeeping never fails a batch)."""
        before = int(time.time() * 1000) - self.settings.retention_ms
        try:
            pruned = prune_detail(self.session.connection(), before)
        except psycopg.Error as exc:
            log.warning("pruning detail older than %s failed: %s", format_time(before), exc)
            self.session.drop()
            return
        self._pruned_at = self.clock()
        if pruned.windows or pruned.batches:
            log.info(
                "pruned the detail of %d windows that ended before %s (%d rows; window_metrics "
                "kept) and %d batch records (CINESTREAM_RETENTION=%s)",
                pruned.windows,
                format_time(before),
                pruned.detail_rows,
                pruned.batches,
                self.settings.retention,
            )
