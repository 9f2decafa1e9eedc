"""Accepting a job: validate -> fetch the start image -> admit (GPU capacity) -> choose seeds -> enqueue.

Runs in a worker thread of the API process (it blocks on the image download and the store).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from pipeline.engine import Capacity, admit
from pipeline.errors import LoraError, Refused
from pipeline.params import SEED_RANGE, RequestError
from server.api.errors import APIError, model_not_found
from server.api.schemas import (
    MODEL_ID,
    VideoRequest,
    conditioning_request,
    describe_request_error,
    parse_body,
    stored_params,
    video_request,
)
from server.core.config import ServerConfig
from server.core.image_fetch import ImageFetchError, fetch_image
from server.queue import KEYFRAME_IMAGES, Job, JobStore, LimitExceeded, NewJob, SubmitLimits

AUTO_RATE_PER_MINUTE = 30.0  # with API keys and --rate-limit auto
AUTO_MAX_ACTIVE = 50  # with API keys and --max-active-jobs auto


def submit_limits(config: ServerConfig) -> SubmitLimits | None:
    """The per-key limits in force: `auto` (-1) means off without API keys, the defaults above with keys."""
    keyed = bool(config.api_keys or config.api_keys_file)
    per_minute = config.rate_limit if config.rate_limit >= 0 else (AUTO_RATE_PER_MINUTE if keyed else 0.0)
    active = config.max_active_jobs if config.max_active_jobs >= 0 else (AUTO_MAX_ACTIVE if keyed else 0)
    limits = SubmitLimits(rate=per_minute / 60.0, burst=max(1.0, config.rate_burst), max_active=active)
    return limits if limits.enabled else None


def check_model(data: Any) -> None:
    """An unknown `model` is 404 with Oxen's own body, before any other validation."""
    if isinstance(data, dict) and isinstance(data.get("model"), str) and data["model"] != MODEL_ID:
        raise APIError(404, "resource_not_found", body=model_not_found(data["model"]))


def refuse_if_too_large(request: VideoRequest, size: tuple[int, int], capacity: Capacity | None,
                        lora_dir: Path | None = None) -> None:
    """400 before queueing when the job's estimated GPU memory exceeds what the plan leaves usable,
    or it names a LoRA the LoRA directory does not hold.

    `size` is the start image's upright (width, height): `auto` sizes follow the upright image.
    """
    try:
        admit(request, size, capacity, lora_dir)
    except LoraError as exc:
        raise APIError(400, "invalid_params", f"loras: {exc}") from None
    except Refused as exc:
        raise APIError(400, "invalid_params", str(exc)) from None


def accept(config: ServerConfig, store: JobStore, body_model: type, data: Any, owner: str,
           copies_field: str | None) -> tuple[Any, list[Job]]:
    """Validate, fetch the image, admit, pick the seeds, and enqueue durably; returns (body, jobs)."""
    check_model(data)
    try:
        body = parse_body(body_model, data)
    except RequestError as exc:
        raise APIError(400, "invalid_params", describe_request_error(exc)) from None
    request = video_request(body)
    copies = getattr(body, copies_field) if copies_field else 1
    limits = submit_limits(config)
    if limits is not None:  # a refused key makes the server fetch nothing (enqueue decides again, atomically)
        try:
            store.check_limits(owner, copies, limits)
        except LimitExceeded as exc:
            raise rate_limited(exc) from None
    try:
        image, size = fetch_image(request.input_image, allow_private=config.allow_private_urls,
                                  timeout=config.fetch_timeout, max_bytes=config.fetch_max_bytes)
    except ImageFetchError as exc:
        raise APIError(400, "invalid_params", str(exc)) from None
    keyframe_shas, keyframe_images = fetch_keyframes(config, request)
    if config.gpu_capacity is not None or request.loras:  # keyframes add tokens and LoRAs memory: counted
        capacity = Capacity(*config.gpu_capacity) if config.gpu_capacity is not None else None
        refuse_if_too_large(conditioning_request(request), size, capacity, config.lora_path)
    digest = hashlib.sha256(image).hexdigest()
    new_jobs = []
    for _ in range(copies):
        # The bytes are stored once beside the jobs; the record keeps a data: URI's header only.
        params = stored_params(request)
        if keyframe_shas:
            params[KEYFRAME_IMAGES] = keyframe_shas
        if params["seed"] is None:  # chosen now, so a retried job reproduces the same video
            params["seed"] = secrets.randbelow(SEED_RANGE)
        new_jobs.append(NewJob(owner=owner, model=MODEL_ID, params=params, input_sha256=digest))
    try:
        return body, store.enqueue(new_jobs, image, keyframe_images=keyframe_images, limits=limits)
    except LimitExceeded as exc:
        raise rate_limited(exc) from None


def rate_limited(exc: LimitExceeded) -> APIError:
    """The 429 envelope for a refused submission, with the seconds to wait in `Retry-After`."""
    return APIError(429, "rate_limited", str(exc), headers={"Retry-After": str(exc.retry_after)})


def fetch_keyframes(config: ServerConfig, request: VideoRequest) -> tuple[list[str], dict[str, bytes]]:
    """Each keyframe image (end_image last), fetched like input_image: (sha256s in the engine's order, bytes by sha).

    Refused with a 400 naming the field (`keyframes[1].image`, `end_image`) on any fetch failure.
    """
    shas: list[str] = []
    images: dict[str, bytes] = {}
    keyframes = conditioning_request(request).keyframes
    for index, keyframe in enumerate(keyframes):
        field = "end_image" if request.end_image is not None and index == len(keyframes) - 1 else \
            f"keyframes[{index}].image"
        try:
            data, _ = fetch_image(keyframe.image, allow_private=config.allow_private_urls,
                                  timeout=config.fetch_timeout, max_bytes=config.fetch_max_bytes)
        except ImageFetchError as exc:
            raise APIError(400, "invalid_params", str(exc).replace("input_image", field)) from None
        shas.append(hashlib.sha256(data).hexdigest())
        images[shas[-1]] = data
    return shas, images
