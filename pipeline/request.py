"""The Oxen model's request: `GenerationParams` plus the start image's URL and Oxen's defaults."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

from pipeline.params import GenerationParams, RequestError, describe_errors

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
        str, Field(description="What to steer away from.", json_schema_extra={"x-order": 8})
    ] = DEFAULT_NEGATIVE_PROMPT

    @field_validator("input_image")
    @classmethod
    def _image_is_uri(cls, value: str) -> str:
        lowered = value[:16].lower()
        if not lowered.startswith(("http://", "https://", "data:", "file:")):
            raise ValueError("must be an http(s) URL or a data: URI")
        return value


def parse_request(data: dict[str, Any]) -> VideoRequest:
    """Validate a plain dict into a `VideoRequest`, raising `RequestError` with readable messages."""
    try:
        return VideoRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(describe_errors(exc)) from None
