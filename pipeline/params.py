"""What the model needs for one job: its parameters, their defaults and ranges, and readable errors.

`GenerationParams` is the one source of truth for the model's parameters: the HTTP layer builds
its bodies on it (adding what the API needs: the model id, the start image's URL, Oxen's
defaults), publishes its JSON Schema, and the command line builds its flags from it. No torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

RESOLUTION_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
RESOLUTION_CHOICES = ("auto", *RESOLUTION_PRESETS)
VIDEO_QUALITIES = ("low", "medium", "high", "maximum")

MIN_FRAMES, MAX_FRAMES = 9, 481
MIN_FPS, MAX_FPS = 1.0, 60.0
# Explicit "WIDTHxHEIGHT" sizes: multiples of 64 (stage 1 runs at half size on a 32-px latent
# grid) inside the 2048-px positional range the model was trained on.
SIZE_MULTIPLE, MIN_SIDE, MAX_SIDE = 64, 128, 2048
MAX_SEED = 2**63 - 1
SEED_RANGE = 2**32  # seeds chosen for the caller stay JSON- and JavaScript-safe
_EXPLICIT_SIZE = re.compile(r"^(\d+)x(\d+)$")
# Keyframes beyond the start image: each appends one latent frame of tokens to every transformer
# pass (and is admitted against the memory plan as such); 8 is ltx-pipelines' keyframe-interpolation
# use with room to spare, while keeping the worst case at most +50% tokens on a 121-frame job.
MAX_KEYFRAMES = 8
# LoRA adapters per job (each adds two rank-r matmuls per adapted layer) and their scale range
# (ComfyUI's and fal's LoRA loaders allow a wide range; beyond +-4 outputs are noise).
MAX_LORAS, MAX_LORA_SCALE = 4, 4.0


class LoraChoice(BaseModel):
    """One LoRA adapter of a job: a file of the server's LoRA directory (by name) and its scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=128, description="LoRA name (GET /api/ai/loras).")]
    scale: Annotated[
        float, Field(ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE, description="Strength: 1.0 as trained, 0 off.")
    ] = 1.0


class Keyframe(BaseModel):
    """One conditioning image at a delivered frame (the image itself travels beside the parameters).

    As ltx-pipelines' `images` triples with a frame index other than 0: its latent is appended
    as extra tokens positioned at `frame_index` (`VideoConditionByKeyframeIndex`) in both stages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_index: Annotated[
        int, Field(ge=1, le=MAX_FRAMES - 1, description="Delivered frame the image conditions (1 .. num_frames-1).")
    ]
    strength: Annotated[
        float, Field(ge=0.0, le=1.0, description="1.0 pins the frame to the image; lower gives the model freedom.")
    ] = 1.0
# The same rule as a JSON Schema pattern (published, so clients and fuzzers generate valid sizes).
_SIDES = "|".join(str(side) for side in range(MIN_SIDE, MAX_SIDE + 1, SIZE_MULTIPLE))
RESOLUTION_PATTERN = rf"^(?:{'|'.join(RESOLUTION_CHOICES)}|(?:{_SIDES})x(?:{_SIDES}))$"
MAX_PROMPT_CHARS = 4000  # ~1000 Gemma tokens of English; the text encoder reads at most 1024 tokens


class GenerationParams(BaseModel):
    """The parameters of one LTX-2.3 image-to-video job (the start image travels beside them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Annotated[str, Field(description="Text that guides the video.", max_length=MAX_PROMPT_CHARS,
                                 json_schema_extra={"x-order": 0, "minLength": 1, "pattern": r"\S"})]
    num_frames: Annotated[
        int,
        Field(ge=MIN_FRAMES, le=MAX_FRAMES, description="Frames to generate.", json_schema_extra={"x-order": 2}),
    ] = 121
    resolution: Annotated[
        str,
        Field(
            description="auto (keep the image's aspect ratio), a preset, or WIDTHxHEIGHT in multiples of 64.",
            json_schema_extra={"x-order": 3, "examples": list(RESOLUTION_CHOICES), "pattern": RESOLUTION_PATTERN},
        ),
    ] = "auto"
    frames_per_second: Annotated[
        float,
        Field(ge=MIN_FPS, le=MAX_FPS, description="Playback frame rate.", json_schema_extra={"x-order": 4}),
    ] = 24.0
    image_strength: Annotated[
        float,
        Field(
            ge=0.0,
            le=1.0,
            description="1.0 keeps the first frame exactly; lower gives the model more freedom.",
            json_schema_extra={"x-order": 5},
        ),
    ] = 0.7
    generate_audio: Annotated[
        bool, Field(description="false returns an MP4 with no audio track.", json_schema_extra={"x-order": 6})
    ] = True
    video_quality: Annotated[
        Literal["low", "medium", "high", "maximum"],
        Field(description="Encoding quality of the MP4 file.", json_schema_extra={"x-order": 7}),
    ] = "high"
    negative_prompt: Annotated[
        str, Field(description="What to steer away from (no effect on the distilled model: guidance 1).",
                   max_length=MAX_PROMPT_CHARS, json_schema_extra={"x-order": 8})
    ] = ""
    seed: Annotated[
        int | None,
        Field(ge=0, le=MAX_SEED, description="Random seed; omitted: chosen and reported.",
              json_schema_extra={"x-order": 9}),
    ] = None

    # Extensions beyond Oxen's contract (omitted: exactly Oxen's behaviour).
    keyframes: Annotated[
        list[Keyframe],
        Field(max_length=MAX_KEYFRAMES, description=f"Extension: up to {MAX_KEYFRAMES} more images pinned to "
              "later frames (start frame: input_image).", json_schema_extra={"x-order": 20}),
    ] = []

    loras: Annotated[
        list[LoraChoice],
        Field(max_length=MAX_LORAS, description=f"Extension: up to {MAX_LORAS} LoRA adapters from the server's "
              "LoRA directory, each {name, scale}.", json_schema_extra={"x-order": 30}),
    ] = []

    enhance_prompt: Annotated[
        bool,
        Field(description="Extension: let the model's Gemma 3 rewrite the prompt from the start image first "
              "(Lightricks' image-to-video system prompt; the rewrite is returned as enhanced_prompt).",
              json_schema_extra={"x-order": 40}),
    ] = False

    @field_validator("loras")
    @classmethod
    def _loras_once_each(cls, value: list[LoraChoice]) -> list[LoraChoice]:
        names = [choice.name for choice in value]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(f"item {index}: LoRA {name!r} is given twice")
        return value

    @field_validator("keyframes")
    @classmethod
    def _keyframes_inside_the_clip(cls, value: list[Keyframe], info: ValidationInfo) -> list[Keyframe]:
        frames = info.data.get("num_frames")  # absent when num_frames itself is invalid
        seen: set[int] = set()
        for index, keyframe in enumerate(value):
            if frames is not None and keyframe.frame_index >= frames:
                raise ValueError(f"item {index}: frame_index {keyframe.frame_index} is not a delivered frame "
                                 f"(num_frames is {frames}: 1 .. {frames - 1})")
            if keyframe.frame_index in seen:
                raise ValueError(f"item {index}: frame_index {keyframe.frame_index} is given twice")
            seen.add(keyframe.frame_index)
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution_known(cls, value: str) -> str:
        if value in RESOLUTION_CHOICES:
            return value
        match = _EXPLICIT_SIZE.match(value)
        if not match:
            raise ValueError(
                f"must be one of {', '.join(RESOLUTION_CHOICES)} or WIDTHxHEIGHT (got {value!r})"
            )
        for side in (int(match.group(1)), int(match.group(2))):
            if side % SIZE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
                raise ValueError(
                    f"WIDTHxHEIGHT needs both sides multiples of {SIZE_MULTIPLE} between "
                    f"{MIN_SIDE} and {MAX_SIDE} (got {value!r})"
                )
        return value


@dataclass(frozen=True)
class FieldError:
    """One violated rule: which field and a sentence a person can act on."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _sentence(error: dict[str, Any]) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    shown = repr(given) if not isinstance(given, (dict, list)) else type(given).__name__
    if len(shown) > 80:  # a multi-megabyte value is named, not echoed
        shown = f"{shown[:60]}... ({len(shown)} characters)"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a parameter of this model"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return _range_sentence(error["loc"][-1], shown)
    if kind.startswith("int_"):
        return f"must be an integer (got {shown})"
    if kind.startswith("float_"):
        return f"must be a number (got {shown})"
    if kind.startswith("bool_"):
        return f"must be true or false (got {shown})"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters (got {len(given)})"
    if kind == "string_unicode":
        return "must be valid Unicode text (it holds an unpaired surrogate)"
    if kind.startswith("string_"):
        return f"must be a string (got {shown})"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')} (got {shown})"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"]


_RANGES = {
    "num_frames": f"must be an integer between {MIN_FRAMES} and {MAX_FRAMES}",
    "frames_per_second": f"must be a number between {MIN_FPS:g} and {MAX_FPS:g}",
    "image_strength": "must be a number between 0 and 1",
    "seed": f"must be an integer between 0 and {MAX_SEED}",
    "frame_index": f"must be an integer between 1 and {MAX_FRAMES - 1}",
    "strength": "must be a number between 0 and 1",
    "end_image_strength": "must be a number between 0 and 1",
    "scale": f"must be a number between {-MAX_LORA_SCALE:g} and {MAX_LORA_SCALE:g}",
}


def _range_sentence(field: Any, shown: str) -> str:
    return f"{_RANGES.get(str(field), 'is out of range')} (got {shown})"


def describe_errors(exc: ValidationError) -> list[FieldError]:
    """Turn a pydantic error into one `FieldError` per violation, in field order."""
    errors = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        errors.append(FieldError(field, _sentence(error)))
    return errors


class RequestError(ValueError):
    """A request that breaks the contract; `errors` names each field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def parse_params(data: dict[str, Any]) -> GenerationParams:
    """Validate a plain dict into `GenerationParams`, raising `RequestError` with readable messages."""
    try:
        return GenerationParams.model_validate(data)
    except ValidationError as exc:
        raise RequestError(describe_errors(exc)) from None
