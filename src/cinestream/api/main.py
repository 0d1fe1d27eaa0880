"""The cinestream metrics API (FastAPI): `cinestream api` or `uvicorn cinestream.api.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool

from cinestream.api.cache import StoreCache
from cinestream.api.deps import KafkaView, StoreReader
from cinestream.api.routes import health, metrics
from cinestream.settings import Settings


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error.get("loc", ()) if x not in ("query", "body"))
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)


# Pooled read-only connections: half of them for answers being computed (StoreReader), the
# rest for /metrics/health, so that a health check never waits behind slow store queries.
POOL_SIZE = 8


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app: a read-only pool, the store cache, the Kafka view, the routes."""
    # Kafka as the reader principal: it may describe what /metrics/health and the lag need.
    settings = (settings or Settings()).for_kafka_role("reader")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            settings.resolved_api_database_url,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            check=ConnectionPool.check_connection,  # after a database restart: no stale 503s
            kwargs={"connect_timeout": 2, "options": "-c default_transaction_read_only=on"},
        )
        pool.open(wait=False)
        cache = StoreCache(settings.resolved_api_database_url)
        cache.start()
        app.state.settings = settings
        app.state.pool = pool
        app.state.reader = StoreReader(pool, cache, max_queries=POOL_SIZE // 2)
        app.state.kafka = KafkaView(settings)
        app.state.health_threads = CapacityLimiter(2)  # not the sync routes' threads
        try:
            yield
        finally:
            cache.close()
            pool.close()

    app = FastAPI(
        title="cinestream metrics API",
        version="0.1.0",
        description="Event-time window metrics of movie ratings, computed exactly by the "
        "cinestream pipeline and stored in PostgreSQL.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={
                "detail": f"invalid parameters: {_validation_message(exc)}",
                "errors": exc.errors(),
            },
        )

    app.include_router(health.router)
    app.include_router(metrics.router)
    return app


app = create_app()
