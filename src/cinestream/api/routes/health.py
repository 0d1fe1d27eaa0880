"""``/metrics/health``: each dependency with its state; 503 naming what is down.

It also carries the data's verdict (``data``): ``degraded`` when the newest ``cinestream_dlq``
report found invalid records above CINESTREAM_DLQ_DEGRADED_SHARE of the traffic. A degraded
platform still answers 200 (it is up: the data needs attention), with ``status`` degraded and
``degraded`` naming why."""

from __future__ import annotations

from typing import Any

import psycopg
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

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
    data = deps["postgres"].pop("data", None)
    down = sorted(name for name, dep in deps.items() if dep["state"] != "up")
    degraded = ["dlq"] if data and data["state"] == "degraded" else []
    body = {
        "status": "ok" if not down and not degraded else "degraded",
        "down": down,
        "degraded": degraded,
        "dependencies": deps,
        "data": data,
    }
    return JSONResponse(status_code=503 if down else 200, content=body)


def _postgres_state(pool: ConnectionPool) -> dict[str, Any]:
    try:
        with pool.connection(timeout=2) as conn:
            reads.ping(conn)
            data = _data_state(conn)
    except (psycopg.Error, TimeoutError) as exc:
        return {"state": "down", "error": type(exc).__name__}
    return {"state": "up", "data": data}


def _data_state(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The newest DLQ report's verdict (``unknown`` before the first one, or on a store whose
    schema predates the reports)."""
    try:
        with conn.transaction():
            verdict = reports.dlq_verdict(conn)
    except psycopg.errors.UndefinedTable:
        verdict = None
    if verdict is None:
        return {"state": "unknown", "reason": "no cinestream_dlq report yet"}
    state = "degraded" if verdict["degraded"] else "ok"
    return {
        "state": state,
        "dlq_report": verdict["id"],
        "at": verdict["run_at"].isoformat(),
        "invalid_share": verdict["share"],
        "threshold": verdict["threshold"],
        "reason": (
            f"invalid records are {verdict['share']:.2%} of the traffic over the last hour's "
            f"DLQ reports (threshold {verdict['threshold']:.2%})"
        ),
    }
