"""`/v1/videos`: OpenAI's video API (as the `openai` SDK calls it) over the same queue and store.

A job made here is an Oxen generation too (same id, owner and store), and the other way round.
Errors under `/v1` come in OpenAI's shape (see `server.api.errors`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from typing import Any

import anyio
import av
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.datastructures import UploadFile  # what request.form() yields (FastAPI subclasses it)
from starlette.exceptions import HTTPException  # what request.form() raises for too many parts

from server.api.deps import Services, current_owner, read_json, services
from server.api.errors import OpenAIError
from server.api.openai_schemas import queue_body, video_object
from server.api.schemas import QueueBody
from server.api.services.accept import accept
from server.api.services.result_files import result_bytes, result_response
from server.queue import SUCCEEDED, Job

router = APIRouter(tags=["openai"])
MAX_LIST = 100


async def read_body(request: Request, max_body: int) -> tuple[dict[str, Any], bytes | None, str]:
    """The fields, the uploaded start image (if any) and its MIME type, from multipart or JSON."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        data = await read_json(request, max_body)
        if not isinstance(data, dict):
            raise OpenAIError(400, "The request body must be a JSON object.", "invalid_value")
        return data, None, ""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise OpenAIError(400, f"The request body is larger than {max_body // 2**20} MiB.", "invalid_value")
    try:  # python-multipart (through Starlette) parses the form; each part is capped like a whole body
        form = await request.form(max_files=1, max_fields=64, max_part_size=max_body)
    except (HTTPException, ValueError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        raise OpenAIError(400, f"The multipart body could not be parsed: {detail}", "invalid_value") from None
    fields: dict[str, Any] = {}
    image, mime = None, ""
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "input_reference":
                raise OpenAIError(400, f"Unexpected file field {name!r}.", "unknown_parameter", name)
            image, mime = await value.read(), value.content_type or ""
        else:
            fields[name] = value
    return fields, image, mime


def image_uri(fields: dict[str, Any], image: bytes | None, mime: str) -> str:
    """The start image as `input_image`: the upload as a data: URI, or JSON's `{"image_url": ...}`."""
    if image is not None:
        kind = mime if mime.startswith("image/") else "image/png"  # the decoder sniffs the real format
        return f"data:{kind};base64,{base64.b64encode(image).decode('ascii')}"
    reference = fields.get("input_reference")
    if isinstance(reference, str) and reference.startswith("{"):  # a form field holding JSON
        with contextlib.suppress(json.JSONDecodeError, RecursionError):
            reference = json.loads(reference)
    if isinstance(reference, dict) and isinstance(reference.get("image_url"), str):
        return reference["image_url"]
    if isinstance(reference, str) and reference:
        return reference
    message = ("input_reference (the start image) is required: upload a file, or give "
               '{"image_url": "<http(s) URL or data: URI>"}. This is an image-to-video model.')
    if isinstance(reference, dict) and "file_id" in reference:
        message = "input_reference.file_id is not supported here (no Files API); upload the image or use image_url."
    raise OpenAIError(400, message, "invalid_value", "input_reference")


def owned(svc: Services, video_id: str, owner: str) -> Job:
    job = svc.store.get(video_id, owner=owner)
    if job is None:
        raise OpenAIError(404, f"No video found with id {video_id!r}.", "not_found", "video_id")
    return job


@router.post("/v1/videos")
async def create_video(request: Request, owner: str = Depends(current_owner),
                       svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Create a video job from OpenAI's fields (multipart as the SDK sends them, or JSON)."""
    fields, image, mime = await read_body(request, svc.max_body)
    data = queue_body({k: v for k, v in fields.items() if k != "input_reference"}, image_uri(fields, image, mime))
    _body, created = await anyio.to_thread.run_sync(accept, svc.config, svc.store, QueueBody, data, owner, None)
    svc.metrics.enqueued.labels("openai").inc()
    return JSONResponse(video_object(created[0]))


@router.get("/v1/videos")
def list_videos(after: str | None = None, limit: int = 20, order: str = "desc",
                owner: str = Depends(current_owner), svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """The caller's videos, any status, newest first by default; cursor-paged with `after`."""
    if not 1 <= limit <= MAX_LIST:
        raise OpenAIError(400, f"limit must be between 1 and {MAX_LIST} (got {limit}).", "invalid_value", "limit")
    if order not in ("asc", "desc"):
        raise OpenAIError(400, f"order must be asc or desc (got {order!r}).", "invalid_value", "order")
    found = svc.store.after(owner, after, limit, newest_first=order == "desc")
    if found is None:
        raise OpenAIError(400, f"after names no video of yours ({after!r}).", "invalid_value", "after")
    page, has_more = found
    data = [video_object(job) for job in page]
    return JSONResponse({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


@router.get("/v1/videos/{video_id}")
def retrieve_video(video_id: str, owner: str = Depends(current_owner),
                   svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """One video job."""
    return JSONResponse(video_object(owned(svc, video_id, owner)))


@router.delete("/v1/videos/{video_id}")
def delete_video(video_id: str, owner: str = Depends(current_owner),
                 svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Cancel a queued or processing job. The record stays (the Oxen API keeps records), so
    `deleted` is true only when the job is now cancelled; an ended job is left as it was."""
    job = svc.store.cancel(video_id, owner=owner)
    if job is None:
        raise OpenAIError(404, f"No video found with id {video_id!r}.", "not_found", "video_id")
    return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": job.status == "cancelled"})


@router.get("/v1/videos/{video_id}/content", response_model=None)
def video_content(request: Request, video_id: str, variant: str = "video", owner: str = Depends(current_owner),
                  svc: Services = Depends(services)) -> Response:  # noqa: B008
    """The MP4, or (`variant=thumbnail`) a JPEG of its first frame. Spritesheets are not made."""
    if variant not in ("video", "thumbnail"):
        raise OpenAIError(400, f"variant {variant!r} is not supported here (video or thumbnail).",
                          "invalid_value", "variant")
    job = owned(svc, video_id, owner)
    if job.status != SUCCEEDED:
        raise OpenAIError(409, f"Video {video_id} is {video_object(job)['status']}, so it has no content.",
                          "video_not_ready")
    key = job.result_path if job.result_path and not job.result_deleted_at else None
    response = result_response(svc.results, key, request, f"{video_id}.mp4") if key else None
    if response is None:
        raise OpenAIError(404, f"The content of video {video_id} has been deleted (retention).", "content_deleted")
    if variant == "video":
        return response
    path = svc.results.local_file(key)
    return Response(thumbnail(str(path) if path else io.BytesIO(result_bytes(svc.results, key))),
                    media_type="image/jpeg")


def thumbnail(path: str | io.BytesIO) -> bytes:
    """The first frame as a JPEG (one frame decoded: cheap)."""
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        image: Image.Image = frame.to_image()
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()
