"""HTTP bodies and responses of the Oxen contract, built on the model's `GenerationParams`.

`VideoRequest` is the Oxen model's request: `GenerationParams` plus the start image's URL and
Oxen's defaults. The two request bodies extend it (so the same pydantic model validates and its
JSON Schema is what `/api/ai/models/{id}` publishes); responses are shaped here from store rows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from pipeline.params import (
    MAX_KEYFRAMES,
    MAX_PROMPT_CHARS,
    FieldError,
    GenerationParams,
    Keyframe,
    RequestError,
    describe_errors,
)
from server.queue import KEYFRAME_IMAGES, Job

MODEL_ID = "ltx-2-3-quality-image-to-video"

# The seed page's default negative prompt, verbatim (it has no effect at guidance 1, but it is
# part of the contract and is echoed back to clients).
DEFAULT_NEGATIVE_PROMPT = (
    "color distortion, overexposure, static, blurry details, subtitles, style, artwork, painting, "
    "frame, still, dim overall tone, worst quality, low quality, JPEG compression artifacts, ugly, "
    "mutilated, extra fingers, poorly drawn hands, poorly drawn face, deformed, disfigured, "
    "malformed limbs, fused fingers, motionless frame, cluttered background, three legs, "
    "crowded background, walking backwards"
)


def _check_image_uri(value: str) -> str:
    lowered = value[:16].lower()
    if not lowered.startswith(("http://", "https://", "data:", "file:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return value


class KeyframeInput(Keyframe):
    """Extension: one keyframe of a request, its image given like `input_image`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: Annotated[str, Field(description="URL of the keyframe's image (http, https or a data: URI).",
                                json_schema_extra={"format": "uri"})]

    @field_validator("image")
    @classmethod
    def _image_is_uri(cls, value: str) -> str:
        return _check_image_uri(value)


class VideoRequest(GenerationParams):
    """The parameters of `ltx-2-3-quality-image-to-video`, with the contract's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_image: Annotated[
        str,
        Field(
            description="URL of the start image (http, https or a data: URI).",
            json_schema_extra={"format": "uri", "x-order": 1},
        ),
    ]
    negative_prompt: Annotated[
        str, Field(description="What to steer away from.", max_length=MAX_PROMPT_CHARS,
                   json_schema_extra={"x-order": 8})
    ] = DEFAULT_NEGATIVE_PROMPT
    # Extensions (absent: Oxen's behaviour). `keyframes` as the model's, each with its image URL.
    keyframes: Annotated[
        list[KeyframeInput],
        Field(max_length=MAX_KEYFRAMES, description=f"Extension: up to {MAX_KEYFRAMES} images pinned to later "
              "frames, each {image, frame_index, strength}; frame 0 is input_image.",
              json_schema_extra={"x-order": 20}),
    ] = []
    end_image: Annotated[
        str | None,
        Field(description="Extension: URL of the last frame's image (shorthand for a keyframe at num_frames - 1).",
              json_schema_extra={"format": "uri", "x-order": 21}),
    ] = None
    end_image_strength: Annotated[
        float, Field(ge=0.0, le=1.0, description="Extension: strength of end_image (1.0 pins it).",
                     json_schema_extra={"x-order": 22})
    ] = 1.0

    @field_validator("input_image")
    @classmethod
    def _image_is_uri(cls, value: str) -> str:
        return _check_image_uri(value)

    @field_validator("end_image")
    @classmethod
    def _end_image_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        _check_image_uri(value)
        keyframes, frames = info.data.get("keyframes") or [], info.data.get("num_frames")
        if len(keyframes) + 1 > MAX_KEYFRAMES:
            raise ValueError(f"keyframes and end_image together must be at most {MAX_KEYFRAMES} images")
        if frames is not None and any(keyframe.frame_index == frames - 1 for keyframe in keyframes):
            raise ValueError(f"a keyframe already conditions the last frame ({frames - 1})")
        return value


# Extension fields and their defaults: a job that leaves them so stores and echoes exactly Oxen's fields.
EXTENSION_DEFAULTS: dict[str, Any] = {"keyframes": [], "end_image": None, "end_image_strength": 1.0, "loras": [],
                                      "enhance_prompt": False}


def conditioning_request(request: VideoRequest) -> VideoRequest:
    """The request the engine runs: `end_image` folded into `keyframes` as the last delivered frame."""
    if request.end_image is None:
        return request
    end = KeyframeInput(image=request.end_image, frame_index=request.num_frames - 1,
                        strength=request.end_image_strength)
    return request.model_copy(update={"keyframes": [*request.keyframes, end], "end_image": None})


def stored_params(request: VideoRequest) -> dict[str, Any]:
    """A request as the job record keeps it: extension fields only when used, data: URIs shortened."""
    params = request.model_dump()
    for name, default in EXTENSION_DEFAULTS.items():
        if params.get(name) == default and not (name == "end_image_strength" and params.get("end_image")):
            params.pop(name)
    params["input_image"] = echo_input_image(params["input_image"])
    for keyframe in params.get("keyframes", []):
        keyframe["image"] = echo_input_image(keyframe["image"])
    if params.get("end_image"):
        params["end_image"] = echo_input_image(params["end_image"])
    return params


def parse_request(data: dict[str, Any]) -> VideoRequest:
    """Validate a plain dict into a `VideoRequest`, raising `RequestError` with readable messages."""
    try:
        return VideoRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(describe_errors(exc)) from None


NUM_GENERATIONS_ERROR = "num_generations must be an integer between 1 and 4"
REQUEST_FIELDS = tuple(VideoRequest.model_fields)


class SyncGenerateBody(VideoRequest):
    """`POST /api/ai/videos/generate`: the model, its parameters and the response format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, Field(description="Model id.")]
    response_format: Annotated[
        Literal["url", "b64_json"], Field(description="url (a temporary link) or b64_json (the MP4 inline).")
    ] = "url"


class QueueBody(VideoRequest):
    """`POST /api/ai/queue`: the model, its parameters and how many copies to run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str, Field(description="Model id.")]
    num_generations: Annotated[int, Field(ge=1, le=4, description="Copies of the same request, 1-4.")] = 1


def video_request(body: VideoRequest) -> VideoRequest:
    """The model's ten parameters out of a body model."""
    return VideoRequest.model_validate(body.model_dump(include=set(REQUEST_FIELDS)))


def parse_body(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate a body; `RequestError` lists each field with a sentence."""
    if not isinstance(data, dict):
        raise RequestError([FieldError("body", "must be a JSON object")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in describe_errors(exc):
            if error.field == "num_generations":
                error = FieldError("num_generations", NUM_GENERATIONS_ERROR)
            errors.append(error)
        raise RequestError(errors) from None


def describe_request_error(exc: RequestError) -> str:
    """The envelope's `detail`: `num_generations` keeps Oxen's exact sentence."""
    parts = [error.message if error.message == NUM_GENERATIONS_ERROR else str(error) for error in exc.errors]
    return "; ".join(parts)


def request_schema() -> dict[str, Any]:
    """The model's request schema as published under both `request_schema` and `json_request_schema`.

    Properties in the contract's order (`x-order`): the Oxen fields sit between the model's own.
    """
    schema = VideoRequest.model_json_schema()
    ordered = sorted(schema["properties"].items(), key=lambda item: item[1].get("x-order", len(schema["properties"])))
    return {**schema, "properties": dict(ordered)}


def echo_input_image(value: str) -> str:
    """Parameters are echoed, but a multi-megabyte data: URI is shortened to its header."""
    if value[:5].lower() == "data:":
        header = value.split(",", 1)[0]
        return f"{header},<{len(value)} characters omitted>"
    return value


def generation_row(job: Job, result_url: str | None) -> dict[str, Any]:
    """A job as `GET /api/ai/queue/{id}` returns it: contract fields, echoed parameters, extensions."""
    params = dict(job.params)
    params.pop(KEYFRAME_IMAGES, None)  # where the keyframe images are stored: not part of the request
    params["input_image"] = echo_input_image(params.get("input_image", ""))
    row: dict[str, Any] = {
        "generation_id": job.id,
        "model_name": job.model,
        "model": job.model,
        "media_type": job.media_type,
        "status": job.status,
        "result_url": result_url,
        "error_message": None if job.status == "succeeded" and not job.result_deleted_at else job.error_message,
        "enqueued_at": int(job.enqueued_at),
        "started_at": int(job.started_at) if job.started_at else None,
        "completed_at": int(job.completed_at) if job.completed_at else None,
    }
    if job.status in ("queued", "processing"):
        row["error_message"] = None
    row.update(params)
    # Extensions.
    row["progress"] = round(job.progress, 4)
    row["stage"] = job.stage
    row["attempts"] = job.attempts
    if job.result_deleted_at:
        row["result_deleted_at"] = int(job.result_deleted_at)
    if job.info:
        row["output"] = job.info
        for name in ("enhanced_prompt", "enhance_prompt_note"):  # extension: the prompt actually used
            if job.info.get(name):
                row[name] = job.info[name]
    return row


MODEL_CREATED = 1772323200  # 2026-03-01, LTX-2.3's release month; a fixed value as in Oxen's list


def model_object(notice: str | None) -> dict[str, Any]:
    """The `/api/ai/models` entry for the one model this server runs."""
    description = (
        "LTX-2.3 (Lightricks) distilled image-to-video with synchronized audio, served locally: "
        "animates a start image guided by a prompt, up to 481 frames at 1-60 fps."
    )
    schema = request_schema()
    obj: dict[str, Any] = {
        "id": MODEL_ID,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "lightricks",
        "display_name": "LTX 2.3 Quality: Image to Video",
        "description": f"{notice} {description}" if notice else description,
        "model_type": "image_to_video",
        "endpoint": "/videos/generate",
        "capabilities": {"input": ["text", "image"], "output": ["video", "audio"]},
        "request_schema": schema,
        "json_request_schema": schema,
        "smoke_test": bool(notice),  # extension: true when the tiny (noise) model is loaded
    }
    if notice:
        obj["notice"] = notice
    return obj


class QueueListQuery(BaseModel):
    """`GET /api/ai/queue`'s query string (`status`: see `routes.queue.parse_statuses`)."""

    model: str | None = None
    status: str | None = Field(None, description="A status, a comma-separated list of them, or `all` "
                                                 "(default: queued and processing).")
    media_type: str | None = None
    namespace: str | None = Field(None, description="Oxen repository fields: accepted, not filtered on.")
    repo: str | None = None
    folder: str | None = None
    limit: int | None = Field(None, description="At most this many rows (1-1000, default 1000).")
    offset: int | None = Field(None, description="Rows to skip (at least 0).")


class GenerationsQuery(BaseModel):
    """`GET /api/ai/generations`' query string."""

    model: str | None = None
    media_type: str | None = None
    status: str | None = Field(None, description="A status, a comma-separated list of them, or `all` (default).")
    page: int = 1
    page_size: int = 50
