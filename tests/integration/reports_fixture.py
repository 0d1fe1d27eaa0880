"""Reports written through the product's own writers (``store/reports.py``), for the tests of
what shows them: the health route, the dashboard and the quality view."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cinestream.settings import Settings


def degraded_dlq_report(
    settings: Settings,
    source: str,
    reasons: Sequence[dict[str, Any]] = (),
    keys: Sequence[dict[str, Any]] = (),
) -> Any:
    """A cinestream_dlq report over 100 invalid records in 1,100 (9%, above the 5% bound)."""
    from cinestream.store import reports

    return reports.DlqReport(
        source=source,
        dlq_topic=settings.dlq_topic,
        topic_id=None,
        start_offsets={"0": 0},
        end_offsets={"0": 100},
        invalid=100,
        valid=1000,
        share=100 / 1100,
        threshold=0.05,
        degraded=True,
        counted={"valid_total": 1000, "invalid_total": 100},
        reasons=list(reasons),
        keys=list(keys),
    )


def record_degraded_dlq_report(settings: Settings, source: str) -> int:
    """:func:`degraded_dlq_report` recorded in the store; its id."""
    import psycopg

    from cinestream.store import reports, schema

    with psycopg.connect(settings.resolved_database_url) as conn:
        schema.ensure_schema(conn)
        return reports.record_dlq_report(conn, degraded_dlq_report(settings, source))
