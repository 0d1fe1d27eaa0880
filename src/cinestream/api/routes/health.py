"""``/metrics/health``: each dependency with its state; 503 naming what is down."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cinestream.store import reads

router = APIRouter(prefix="/metrics", tags=["health"])


@router.get("/health", summary="Dependencies and their state")
def health(request: Request) -> JSONResponse:
    """200 with each dependency's state, or 503 naming what is down."""
    deps: dict[str, Any] = {}
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            reads.ping(conn)
        deps["postgres"] = {"state": "up"}
    except (psycopg.Error, TimeoutError) as exc:
        deps["postgres"] = {"state": "down", "error": type(exc).__name__}
    kafka = request.app.state.kafka.snapshot()
    deps["kafka"] = (
        {"state": "up", "bootstrap": request.app.state.settings.kafka_bootstrap}
        if kafka.get("up")
        else {"state": "down", "error": kafka.get("error", "unreachable")}
    )
    down = sorted(name for name, dep in deps.items() if dep["state"] != "up")
    body = {"status": "ok" if not down else "degraded", "down": down, "dependencies": deps}
    return JSONResponse(status_code=503 if down else 200, content=body)
