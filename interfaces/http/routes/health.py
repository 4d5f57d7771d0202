"""/healthz: the process is alive; /readyz: the database and read models are ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from infrastructure.deadlines import deadline
from interfaces.http.deps import ProbeDep, ServicesDep
from interfaces.http.schemas import HealthResponse

router = APIRouter(tags=["health"])

# Readiness tolerates this many events not yet applied by a read model.
MAX_READY_LAG = 1000
# An orchestrator's probe gives up after a second or so: answer before that,
# the log's check ending (or cancelled) with room left for the answer.
READY_WITHIN_S = 1.0
CHECK_WITHIN_S = 0.75 * READY_WITHIN_S


@router.get("/healthz")
async def healthz() -> HealthResponse:
    """Answer while the process is alive."""
    return HealthResponse(status="ok")


@router.get("/readyz", responses={503: {"model": HealthResponse}})
def readyz(services: ServicesDep, probe: ProbeDep) -> JSONResponse:
    """Answer 200 when the events table takes appends and is read in time, and
    the lagging read models keep up; within READY_WITHIN_S either way."""
    checks: dict[str, str] = {}
    ready = True
    try:
        with deadline(CHECK_WITHIN_S):
            lag = services.read_models.lag(
                services.recorder, services.app.name, MAX_READY_LAG + 1
            )
        checks["read_models"] = f"lag {lag}"
        ready = lag <= MAX_READY_LAG
    except Exception as error:  # noqa: BLE001  (any failure means not ready)
        checks["database"] = f"unreachable ({type(error).__name__})"
        ready = False
    if probe.appends_blocked:
        checks["events"] = "appends blocked by a lock"
        ready = False
    for worker in services.workers:
        if worker.last_error:
            checks[worker.label or "read models"] = f"failed: {worker.last_error}"
            ready = False
    body = HealthResponse(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), 200 if ready else 503)
