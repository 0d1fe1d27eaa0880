"""What the dashboard says of ``/metrics/health``'s ``data`` (the newest cinestream_dlq report's
verdict): a pure function, so the rule is tested without a browser."""

from __future__ import annotations

from typing import Any


def data_notice(data: dict[str, Any] | None, quality_url: str) -> tuple[str, str] | None:
    """``("error", text)`` for a degraded platform, ``("warning", text)`` for a stale verdict,
    None when there is nothing to say (ok, no report yet, or no answer)."""
    if not data:
        return None
    if data.get("state") == "degraded":
        return (
            "error",
            f"Degraded: {data['reason']}. DLQ report {data['dlq_report']} in the Airflow UI, "
            f"Browse -> Data quality (cinestream) ({quality_url}).",
        )
    if data.get("state") == "stale":
        return (
            "warning",
            f"No current verdict on invalid records: {data['reason']} "
            f"(DLQ report {data['dlq_report']}, {quality_url}).",
        )
    return None
