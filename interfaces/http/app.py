"""create_app(): the FastAPI application, its lifespan and its routes."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from fastapi import FastAPI

from infrastructure.callers import SessionCallers
from infrastructure.database import DatabaseProbe
from infrastructure.instruments import sample_pools
from infrastructure.periodic import Periodic
from infrastructure.settings import Settings
from interfaces.bootstrap import (
    CALLER_CONNECTIONS,
    READ_MODELS,
    build_services,
    request_connections,
)
from interfaces.http.errors import install_error_handlers
from interfaces.http.limits import (
    BodySizeLimit,
    DatabaseGate,
    RequestDeadline,
    SecurityHeaders,
)
from interfaces.http.observe import Observed
from interfaces.http.routes import (
    account,
    admin,
    auth,
    health,
    mfa,
    sessions,
    webhooks,
    well_known,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from infrastructure.projection_runner import ReadModelSpec

POOL_SAMPLE_S = 1.0


class ObservedAPI(FastAPI):
    """FastAPI, with Observed outside even Starlette's error middleware: a 500
    is counted, logged and answered with its request id too."""

    def build_middleware_stack(self) -> ASGIApp:
        return Observed(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None,
    read_models: tuple[ReadModelSpec[Any], ...] = READ_MODELS,
) -> FastAPI:
    """Build the API; services are built at startup and closed at shutdown."""
    settings = settings or Settings()
    probe = DatabaseProbe()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await to_thread.run_sync(build_services, settings, read_models)
        app.state.services = services
        # One thread per connection of the request pool: a route that runs in
        # a thread finds a connection free (see ADR 36).
        threads = settings.request_threads or request_connections(settings)
        to_thread.current_default_thread_limiter().total_tokens = threads
        callers = SessionCallers(
            services.database_url, CALLER_CONNECTIONS, settings.request_deadline_s
        )
        await callers.open()
        app.state.callers = callers
        probe.start(services.database_url, services.recorder.table)
        pools = Periodic(
            "pool sample",
            POOL_SAMPLE_S,
            sample_pools(
                {"requests": services.recorder.datastore.pool, "callers": callers.pool}
            ),
        )
        pools.start()
        # What start-up built lives as long as the process: kept out of the
        # collector's passes, which then stay short (a request's tail latency).
        gc.freeze()
        try:
            yield
        finally:
            await to_thread.run_sync(pools.stop)
            await to_thread.run_sync(probe.stop)
            await callers.close()
            await to_thread.run_sync(services.close)

    app = ObservedAPI(
        title="authledger",
        summary=(
            "Event-sourced authentication: sessions you can trust, "
            "an audit trail you can replay."
        ),
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own telemetry would trace each request a second time and
        # export validation errors with their input (a password) as logs:
        # the request's span, metrics and log line are made outside it.
        telemetry={
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)
    app.state.probe = probe
    app.add_middleware(RequestDeadline, seconds=settings.request_deadline_s)
    app.add_middleware(DatabaseGate, probe=probe)
    app.add_middleware(SecurityHeaders)  # outermost of ours: every answer has them
    app.include_router(auth.router)
    app.include_router(mfa.router)
    app.include_router(sessions.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(well_known.router)
    return app
