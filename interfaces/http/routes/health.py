"""/healthz: the process is alive; /readyz: the database and read models are ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from interfaces.http.deps import ServicesDep
from interfaces.http.schemas import HealthResponse

router = APIRouter(tags=["health"])

# Readiness tolerates this many events not yet applied by a read model.
MAX_READY_LAG = 1000


@router.get("/healthz")
def healthz() -> HealthResponse:
    """Answer while the process is alive."""
    return HealthResponse(status="ok")


@router.get("/readyz", responses={503: {"model": HealthResponse}})
def readyz(services: ServicesDep) -> JSONResponse:
    """Answer 200 when the database answers and the lagging read models keep up."""
    checks: dict[str, str] = {}
    ready = True
    try:
        lag = services.read_models.lag(
            services.recorder, services.app.name, MAX_READY_LAG + 1
        )
        checks["read_models"] = f"lag {lag}"
        ready = lag <= MAX_READY_LAG
    except Exception as error:  # noqa: BLE001  (any failure means not ready)
        checks["database"] = f"unreachable ({type(error).__name__})"
        ready = False
    for worker in services.workers:
        if worker.last_error:
            checks[worker.label or "read models"] = f"failed: {worker.last_error}"
            ready = False
    body = HealthResponse(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), 200 if ready else 503)
