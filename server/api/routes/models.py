"""`/api/ai/models`: the one model served here, with its request schema."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from server.api.deps import Services, current_owner, services
from server.api.errors import APIError, model_not_found
from server.api.metrics import READY_MAX_AGE
from server.api.schemas import MODEL_ID, model_object

# The contract authenticates every request under /api.
router = APIRouter(tags=["models"], dependencies=[Depends(current_owner)])


@router.get("/api/ai/models")
def list_models(svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """The one model served here (with the tiny-model notice when it is the smoke-test model)."""
    return JSONResponse({"object": "list", "data": [model_object(current_notice(svc))]})


@router.get("/api/ai/models/{model_id}")
def get_model(model_id: str, svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """The model object with its request schema."""
    if model_id != MODEL_ID:
        raise APIError(404, "resource_not_found", body=model_not_found(model_id))
    return JSONResponse(model_object(current_notice(svc)))


def current_notice(svc: Services) -> str | None:
    """The weights notice as the workers report it (their rows carry smoke_test and notice)."""
    live = svc.store.live_workers(READY_MAX_AGE)
    notices = [w["notice"] for w in live if w["ready"] and w["smoke_test"]]
    if notices:
        return notices[0]
    if any(w["ready"] for w in live):
        return None
    return svc.config.weights_notice
