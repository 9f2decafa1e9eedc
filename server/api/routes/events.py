"""`GET /api/events`: Server-Sent Events for the caller's generations."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from server.api.deps import Services, current_owner, services
from server.api.events import oxen_payload

router = APIRouter(tags=["events"])


@router.get("/api/events")
async def events(request: Request, owner: str = Depends(current_owner),
                 svc: Services = Depends(services)) -> StreamingResponse:  # noqa: B008
    """Server-Sent Events for the caller's generations (completions, plus extensions)."""
    base = svc.base_url(request)
    stream = svc.hub.stream(owner, svc.config.keepalive_seconds, request.is_disconnected,
                            lambda event: oxen_payload(event, lambda job_id: svc.signed_result_url(base, job_id)))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
