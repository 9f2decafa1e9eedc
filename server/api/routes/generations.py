"""`/api/ai/generations`: browse the caller's generations (any status), page by page, newest first."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.api.deps import caller, query_doc, read_query
from server.api.errors import APIError
from server.api.routes.queue import parse_statuses
from server.api.schemas import GenerationsQuery, generation_row
from server.queue import Job

router = APIRouter(tags=["generations"])
MAX_PAGE_SIZE = 1000


@router.get("/api/ai/generations", openapi_extra=query_doc(GenerationsQuery))
async def browse_generations(request: Request) -> JSONResponse:
    """One page of the caller's generations; `status` (comma-separated) filters, default all."""
    svc, owner = caller(request)  # no `Depends` (see `read_query`)
    query = read_query(GenerationsQuery, request)
    page, page_size = query.page, query.page_size
    if page < 1:
        raise APIError(400, "invalid_params", f"page must be at least 1 (got {page})")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise APIError(400, "invalid_params", f"page_size must be between 1 and {MAX_PAGE_SIZE} (got {page_size})")

    def render(found: list[Job], total: int) -> JSONResponse:
        return JSONResponse({
            "count": len(found),
            "generations": [generation_row(job, svc.result_url(request, job)) for job in found],
            "page_number": page,
            "page_size": page_size,
            "total_entries": total,
            "total_pages": math.ceil(total / page_size),
        })

    return await svc.read_page(render, owner=owner, statuses=parse_statuses(query.status) if query.status else None,
                               model=query.model, media_type=query.media_type, offset=(page - 1) * page_size,
                               limit=page_size, newest_first=True)


@router.get("/api/ai/generations/{generation_id}")
async def browse_generation(generation_id: str, request: Request) -> JSONResponse:
    """One generation in Oxen's resource envelope."""
    svc, owner = caller(request)  # a status read: no `Depends`
    job = await svc.read_owned_job(generation_id, owner)
    return JSONResponse({"generation": generation_row(job, svc.result_url(request, job)),
                         "status": "success", "status_message": "resource_found"})
