"""``/metrics/health``: each dependency with its state; 503 naming what is down."""

from __future__ import annotations

from typing import Any

import psycopg
from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from cinestream.store import reads

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
    down = sorted(name for name, dep in deps.items() if dep["state"] != "up")
    body = {"status": "ok" if not down else "degraded", "down": down, "dependencies": deps}
    return JSONResponse(status_code=503 if down else 200, content=body)


def _postgres_state(pool: ConnectionPool) -> dict[str, Any]:
    try:
        with pool.connection(timeout=2) as conn:
            reads.ping(conn)
    except (psycopg.Error, TimeoutError) as exc:
        return {"state": "down", "error": type(exc).__name__}
    return {"state": "up"}
