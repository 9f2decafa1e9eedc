"""OpenAI's video API (`/v1/videos`) mapped onto this model: request fields in, video objects out.

OpenAI's `seconds` and `size` become this model's `num_frames` (via the frame rate) and an explicit
`resolution`; the model's own parameters are accepted beside them as extra fields. Store statuses
map onto OpenAI's four: queued, processing -> in_progress, succeeded -> completed, and failed or
cancelled -> failed (a cancelled job's error code is `cancelled`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.params import MAX_FRAMES, MIN_FRAMES, GenerationParams, RequestError
from server.api.errors import OpenAIError
from server.api.schemas import MODEL_ID, REQUEST_FIELDS, QueueBody, parse_body
from server.queue import CANCELLED, FAILED, PROCESSING, QUEUED, SUCCEEDED, Job

OPENAI_STATUS = {QUEUED: "queued", PROCESSING: "in_progress", SUCCEEDED: "completed", FAILED: "failed",
                 CANCELLED: "failed"}
DEFAULT_FPS = GenerationParams.model_fields["frames_per_second"].default
# The model's own parameters a /v1 body may carry (the start image comes as `input_reference`).
MODEL_FIELDS = tuple(name for name in REQUEST_FIELDS if name != "input_image")
OPENAI_FIELDS = ("model", "prompt", "seconds", "size", "input_reference")
# Where a validation error of the Oxen body points, in /v1's field names.
PARAM_NAMES = {"resolution": "size", "input_image": "input_reference"}
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def frames_for(seconds: float, fps: float) -> int:
    """The smallest valid frame count (8k+1, at least 9) lasting `seconds` at `fps`."""
    needed = max(MIN_FRAMES, math.ceil(seconds * fps - 1e-9))
    return MIN_FRAMES + math.ceil((needed - MIN_FRAMES) / 8) * 8


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise OpenAIError(400, f"seconds must be a number of seconds (got {value!r}).", "invalid_value",
                          "seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise OpenAIError(400, f"seconds must be positive (got {value!r}).", "invalid_value", "seconds")
    return seconds


def _fps(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return DEFAULT_FPS  # the body's validation names the bad value


def queue_body(fields: dict[str, Any], image_uri: str) -> dict[str, Any]:
    """An Oxen queue body (model, start image, the model's parameters) from /v1 fields.

    Raises `OpenAIError` (400, naming the parameter) for anything this model cannot take.
    """
    unknown = [name for name in fields if name not in OPENAI_FIELDS and name not in MODEL_FIELDS]
    if unknown:
        raise OpenAIError(400, f"Unknown parameter: {unknown[0]!r}. This server takes {', '.join(OPENAI_FIELDS)} "
                          f"and the model's own {', '.join(MODEL_FIELDS)}.", "unknown_parameter", unknown[0])
    model = fields.get("model") or MODEL_ID  # OpenAI's default is its own model; here it is this one
    if model != MODEL_ID:
        raise OpenAIError(404, f"The model {model!r} does not exist on this server; it serves {MODEL_ID!r}.",
                          "model_not_found", "model")
    data: dict[str, Any] = {name: fields[name] for name in MODEL_FIELDS if name in fields}
    data |= {"model": MODEL_ID, "input_image": image_uri}
    size = fields.get("size")
    if size is not None:
        if not isinstance(size, str) or not _SIZE.match(size):
            raise OpenAIError(400, f"size must be WIDTHxHEIGHT, e.g. 768x512 (got {size!r}).", "invalid_value", "size")
        data["resolution"] = size
    if fields.get("seconds") is not None and "num_frames" not in data:  # explicit num_frames wins
        frames = frames_for(_seconds(fields["seconds"]), _fps(data.get("frames_per_second", DEFAULT_FPS)))
        if frames > MAX_FRAMES:
            raise OpenAIError(400, f"seconds={fields['seconds']} needs {frames} frames at this frame rate; "
                              f"the model makes at most {MAX_FRAMES} (lower seconds or frames_per_second).",
                              "invalid_value", "seconds")
        data["num_frames"] = frames
    try:
        parse_body(QueueBody, data)
    except RequestError as exc:
        first = exc.errors[0]
        param = PARAM_NAMES.get(first.field, first.field)
        message = "; ".join(f"{PARAM_NAMES.get(e.field, e.field)}: {e.message}" for e in exc.errors)
        raise OpenAIError(400, message, "invalid_value", param) from None
    return data


def duration(job: Job) -> str:
    """The clip's length in seconds as OpenAI's object has it (a string)."""
    info = job.info or {}
    frames = info.get("num_frames") or job.params.get("num_frames") or MIN_FRAMES
    fps = info.get("fps") or job.params.get("frames_per_second") or DEFAULT_FPS
    return f"{round(frames / fps, 2):g}"


def size_of(job: Job) -> str:
    """WIDTHxHEIGHT: the result's once made, else the requested one (or the preset/`auto` asked for)."""
    info = job.info or {}
    if info.get("width") and info.get("height"):
        return f"{info['width']}x{info['height']}"
    return str(job.params.get("resolution", "auto"))


def video_object(job: Job) -> dict[str, Any]:
    """A job as OpenAI's `Video` object (plus `generation_id` and `seed` as extensions)."""
    status = OPENAI_STATUS.get(job.status, "failed")
    obj: dict[str, Any] = {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": 100 if job.status == SUCCEEDED else min(99, int(job.progress * 100)),
        "created_at": int(job.enqueued_at),
        "completed_at": int(job.completed_at) if job.completed_at else None,
        "expires_at": None,
        "prompt": job.params.get("prompt"),
        "seconds": duration(job),
        "size": size_of(job),
        "remixed_from_video_id": None,
        "error": None,
        # Extensions: the Oxen id is the same id; the seed reproduces the video.
        "generation_id": job.id,
        "seed": job.params.get("seed"),
    }
    if job.status == CANCELLED:
        obj["error"] = {"code": "cancelled", "message": job.error_message or "Cancelled by the client."}
    elif job.status == FAILED:
        obj["error"] = {"code": "generation_failed", "message": job.error_message or "The generation failed."}
    return obj
