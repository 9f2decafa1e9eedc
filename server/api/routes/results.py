"""`/api/results/{id}.mp4`: the file behind a signed result URL (no API key: the URL is the capability)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from server.api.deps import Services, services
from server.api.errors import APIError

router = APIRouter(tags=["results"])


@router.head("/api/results/{generation_id}.mp4", operation_id="result_file_head")
@router.get("/api/results/{generation_id}.mp4", operation_id="result_file")
def result_file(generation_id: str, expires: str = "", signature: str = "",
                svc: Services = Depends(services)) -> FileResponse:  # noqa: B008
    """The MP4 behind a signed result URL (byte ranges supported)."""
    if not svc.signer.verify(generation_id, expires, signature):
        raise APIError(403, "unauthenticated", "This result URL is invalid or has expired.")
    job = svc.store.get(generation_id)
    if job is None or job.status != "succeeded" or not job.result_path or job.result_deleted_at:
        raise APIError(404, "resource_not_found")
    path = svc.config.paths.resolve(job.result_path)
    if not path.is_file():
        raise APIError(404, "resource_not_found")
    return FileResponse(path, media_type="video/mp4", filename=f"{generation_id}.mp4",
                        content_disposition_type="inline")
