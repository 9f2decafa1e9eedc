"""`POST /api/ai/videos/generate`: generate and wait, through the same queue."""

from __future__ import annotations

import asyncio
import base64
import logging
import time

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from server.api.deps import Services, body_doc, current_owner, read_json, services
from server.api.errors import APIError
from server.api.schemas import MODEL_ID, SyncGenerateBody
from server.api.services.accept import accept
from server.api.services.result_files import result_bytes
from server.queue import TERMINAL

log = logging.getLogger("ltx_server.api")
router = APIRouter(tags=["generate"])

SYNC_POLL_SECONDS = 0.25


@router.post("/api/ai/videos/generate", openapi_extra=body_doc(SyncGenerateBody))
async def generate(request: Request, owner: str = Depends(current_owner),
                   svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Generate and wait: the job goes through the same queue; the answer comes when it ends."""
    data = await read_json(request, svc.max_body)
    body, created = await anyio.to_thread.run_sync(accept, svc.config, svc.store, SyncGenerateBody, data, owner, None)
    svc.metrics.enqueued.labels("sync").inc()
    job = created[0]
    while job.status not in TERMINAL:
        await asyncio.sleep(SYNC_POLL_SECONDS)
        if await request.is_disconnected():  # nobody will receive it: free the worker
            await anyio.to_thread.run_sync(svc.store.cancel, job.id)
            log.info("sync client went away; cancelled %s", job.id)
            return JSONResponse({}, status_code=499)
        job = await anyio.to_thread.run_sync(svc.store.get, job.id) or job
    if job.status != "succeeded":
        raise APIError(500, "unknown_error", job.error_message or f"The generation was {job.status}.")
    if body.response_format == "b64_json":
        data_bytes = await anyio.to_thread.run_sync(result_bytes, svc.results, job.result_path)
        video: dict[str, str] = {"b64_json": base64.b64encode(data_bytes).decode("ascii")}
    else:
        video = {"url": svc.result_url(request, job) or ""}
    return JSONResponse({"model": MODEL_ID, "created": int(job.completed_at or time.time()), "videos": [video]})
