"""``/metrics/health``: each dependency with its state; 503 naming what is down.

Two questions, two fields. ``status`` is about the dependencies only, as the SPEC has it: ``ok``
(200) or ``down`` (503, ``down`` naming them). ``data`` is the data's verdict from the newest
``cinestream_dlq`` report, which never changes the status code: ``ok``, ``degraded`` (invalid
records above CINESTREAM_DLQ_DEGRADED_SHARE of the traffic: the platform is up, its data needs
attention), ``stale`` (the newest report is older than
:data:`~cinestream.orchestration.dlq_triage.VERDICT_MAX_AGE_S`: cinestream_dlq has stopped, so
its verdict no longer holds) or ``unknown`` (no report yet, or PostgreSQL is down)."""

from __future__ import annotations

from typing import Any

import psycopg
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from cinestream.orchestration.dlq_triage import VERDICT_MAX_AGE_S, age_text, verdict_state
from cinestream.store import reads, reports

router = APIRouter(prefix="/metrics", tags=["health"])


@router.get("/health", summary="Dependencies and their state")
async def health(request: Request) -> JSONResponse:
    """200 with each dependency's state, or 503 naming what is down."""
    # Async, pinging on threads of its own: however many requests wait for the threads that
    # sync routes run on, a health check does not queue behind them.
    deps: dict[str, Any] = {
        "postgres": await to_thread.run_sync(
            _postgres_state, request.app.state.pool, limiter=request.app.state.health_threads
        )
    }
    kafka = request.app.state.kafka.snapshot()
    deps["kafka"] = (
        {"state": "up", "bootstrap": request.app.state.settings.kafka_bootstrap}
        if kafka.get("up")
        else {"state": "down", "error": kafka.get("error", "unreachable")}
    )
    data = deps["postgres"].pop("data", None) or {
        "state": "unknown",
        "reason": "PostgreSQL is down: the cinestream_dlq reports cannot be read",
    }
    down = sorted(name for name, dep in deps.items() if dep["state"] != "up")
    body = {"status": "down" if down else "ok", "down": down, "dependencies": deps, "data": data}
    return JSONResponse(status_code=503 if down else 200, content=body)


def _postgres_state(pool: ConnectionPool) -> dict[str, Any]:
    try:
        with pool.connection(timeout=2) as conn:
            reads.ping(conn)
            try:
                with conn.transaction():
                    verdict = reports.dlq_verdict(conn)
            except psycopg.errors.UndefinedTable:  # a store whose schema predates the reports
                verdict = None
    except (psycopg.Error, TimeoutError) as exc:
        return {"state": "down", "error": type(exc).__name__}
    return {"state": "up", "data": data_state(verdict)}


def data_state(verdict: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` from the newest DLQ report (:func:`cinestream.store.reports.dlq_verdict`, whose
    ``now`` is the database's clock): its verdict while it is fresh, ``stale`` once it is not."""
    if verdict is None:
        return {"state": "unknown", "reason": "no cinestream_dlq report yet"}
    age_s = (verdict["now"] - verdict["run_at"]).total_seconds()
    state = verdict_state(verdict["degraded"], verdict["run_at"], verdict["now"])
    said = "degraded" if verdict["degraded"] else "ok"
    if state == "stale":
        reason = (
            f"the newest cinestream_dlq report is {age_text(age_s)} old (more than "
            f"{VERDICT_MAX_AGE_S // 3600} h): its verdict ({said}) no longer holds; "
            "is cinestream_dlq paused or failing?"
        )
    else:
        reason = (
            f"invalid records are {verdict['share']:.2%} of the traffic over the last hour's "
            f"DLQ reports (threshold {verdict['threshold']:.2%})"
        )
    return {
        "state": state,
        "verdict": said,
        "dlq_report": verdict["id"],
        "at": verdict["run_at"].isoformat(),
        "age_s": max(0, round(age_s)),
        "invalid_share": verdict["share"],
        "threshold": verdict["threshold"],
        "reason": reason,
    }
