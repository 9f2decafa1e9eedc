"""`/api/results/{id}.mp4`: the file behind a signed result URL (no API key: the URL is the capability)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from server.api.deps import Services, services
from server.api.errors import APIError
from server.api.services.result_files import result_response

router = APIRouter(tags=["results"])


@router.head("/api/results/{generation_id}.mp4", operation_id="result_file_head")
@router.get("/api/results/{generation_id}.mp4", operation_id="result_file")
async def result_file(request: Request, generation_id: str, expires: str = "", signature: str = "",
                      svc: Services = Depends(services)) -> Response:  # noqa: B008
    """The MP4 behind a signed result URL (byte ranges supported), from any results backend."""
    if not svc.signer.verify(generation_id, expires, signature):
        raise APIError(403, "forbidden", "This result URL is invalid or has expired.")
    job = await anyio.to_thread.run_sync(svc.store.get, generation_id)
    if job is None or job.status != "succeeded" or not job.result_path or job.result_deleted_at:
        raise APIError(404, "resource_not_found")
    response = await anyio.to_thread.run_sync(result_response, svc.results, job.result_path, request,
                                              f"{generation_id}.mp4")
    if response is None:
        raise APIError(404, "resource_not_found")
    return response
