"""Operations: liveness, readiness and Prometheus metrics (no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.api.deps import Services, services
from server.api.metrics import ready_workers

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the API process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Readiness: at least one worker has its model loaded."""
    ready = ready_workers(svc.store)
    body = {"status": "ready" if ready else "starting", "workers_ready": len(ready)}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def prometheus_metrics(svc: Services = Depends(services)) -> Response:  # noqa: B008
    """Prometheus text format."""
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)
