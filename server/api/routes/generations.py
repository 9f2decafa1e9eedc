"""`/api/ai/generations`: browse the caller's generations (any status), page by page, newest first."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.api.deps import Services, caller, current_owner, services
from server.api.errors import APIError
from server.api.routes.queue import parse_statuses
from server.api.schemas import generation_row

router = APIRouter(tags=["generations"])
MAX_PAGE_SIZE = 1000


@router.get("/api/ai/generations")
def browse_generations(
    request: Request,
    model: str | None = None,
    media_type: str | None = None,
    status: str | None = None,
    page: int = 1,
    page_size: int = 50,
    owner: str = Depends(current_owner),  # noqa: B008
    svc: Services = Depends(services),  # noqa: B008
) -> JSONResponse:
    """One page of the caller's generations; `status` (comma-separated) filters, default all."""
    if page < 1:
        raise APIError(400, "invalid_params", f"page must be at least 1 (got {page})")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise APIError(400, "invalid_params", f"page_size must be between 1 and {MAX_PAGE_SIZE} (got {page_size})")
    statuses = parse_statuses(status) if status else None
    found, total = svc.store.page(owner=owner, statuses=statuses, model=model, media_type=media_type,
                                  offset=(page - 1) * page_size, limit=page_size, newest_first=True)
    return JSONResponse({
        "count": len(found),
        "generations": [generation_row(job, svc.result_url(request, job)) for job in found],
        "page_number": page,
        "page_size": page_size,
        "total_entries": total,
        "total_pages": math.ceil(total / page_size),
    })


@router.get("/api/ai/generations/{generation_id}")
async def browse_generation(generation_id: str, request: Request) -> JSONResponse:
    """One generation in Oxen's resource envelope."""
    svc, owner = caller(request)  # a status read: no `Depends`
    job = await svc.read_owned_job(generation_id, owner)
    return JSONResponse({"generation": generation_row(job, svc.result_url(request, job)),
                         "status": "success", "status_message": "resource_found"})
