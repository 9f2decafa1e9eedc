"""`/api/ai/queue`: enqueue, read, list and cancel generations."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.api.deps import Services, body_doc, caller, current_owner, query_doc, read_json, read_query, services
from server.api.errors import APIError
from server.api.schemas import QueueBody, QueueListQuery, generation_row
from server.api.services.accept import accept
from server.queue import ACTIVE, STATUSES, Job

router = APIRouter(tags=["queue"])
LIST_LIMIT = 1000


@router.post("/api/ai/queue", status_code=200, openapi_extra=body_doc(QueueBody))
async def enqueue(request: Request, owner: str = Depends(current_owner),
                  svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Enqueue 1-4 generations; the jobs are durable before this answers."""
    data = await read_json(request, svc.max_body)
    _body, created = await anyio.to_thread.run_sync(accept, svc.config, svc.store, QueueBody, data, owner,
                                                    "num_generations")
    svc.metrics.enqueued.labels("queue").inc(len(created))
    return JSONResponse({"generations": [{"generation_id": j.id, "status": j.status} for j in created]})


@router.get("/api/ai/queue/{generation_id}")
async def get_generation(generation_id: str, request: Request) -> JSONResponse:
    """One generation, in any state (records persist)."""
    svc, owner = caller(request)  # the API's most frequent call: no `Depends`
    job = await svc.read_owned_job(generation_id, owner)
    return JSONResponse(generation_row(job, svc.result_url(request, job)))


@router.get("/api/ai/queue", openapi_extra=query_doc(QueueListQuery))
async def list_generations(request: Request) -> JSONResponse:
    """The caller's generations in FIFO order; without `status`, only queued and processing ones.

    At most `limit` (1-1000, default 1000) rows from `offset`; `total` and `has_more`
    (extensions) are added when either is given or when the list was cut, never a silent cap.
    `namespace`, `repo` and `folder` name Oxen
    repositories, which this server does not have; they are accepted and do not filter.
    """
    svc, owner = caller(request)  # polled by dashboards: no `Depends` (see `read_query`)
    query = read_query(QueueListQuery, request)
    paged = query.limit is not None or query.offset is not None
    limit, offset = LIST_LIMIT if query.limit is None else query.limit, query.offset or 0
    if not 1 <= limit <= LIST_LIMIT or offset < 0:
        raise APIError(400, "invalid_params", f"limit must be between 1 and {LIST_LIMIT} and offset at least 0")

    def render(found: list[Job], total: int) -> JSONResponse:
        body = {"count": len(found),
                "generations": [generation_row(job, svc.result_url(request, job)) for job in found]}
        has_more = offset + len(found) < total
        if paged or has_more:  # Oxen's exact body otherwise; a cut list always says so
            body |= {"total": total, "has_more": has_more}
        return JSONResponse(body)

    return await svc.read_page(render, owner=owner, statuses=parse_statuses(query.status), model=query.model,
                               media_type=query.media_type, offset=offset, limit=limit)


def parse_statuses(status: str | None) -> tuple[str, ...] | None:
    """`?status=a,b` -> the statuses to list (None: all; default: the active ones)."""
    if not status:
        return ACTIVE
    wanted = tuple(s.strip() for s in status.split(",") if s.strip())
    if "all" in wanted:
        return None
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise APIError(400, "invalid_params", f"status must be one of {', '.join(STATUSES)} (got {', '.join(unknown)})")
    return wanted


@router.delete("/api/ai/queue/{generation_id}")
def cancel_generation(generation_id: str, owner: str = Depends(current_owner),
                      svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Cancel: a queued job at once, a processing one within one denoising step."""
    if svc.store.cancel(generation_id, owner=owner) is None:
        raise APIError(404, "resource_not_found")
    return JSONResponse({"status": "success", "generation_id": generation_id})
