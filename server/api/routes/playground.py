"""The web playground: `/` (one static page with its script and style) and the size `auto` will pick.

The page is plain files in `server/api/static/` (no build step, nothing from another origin),
served with a strict Content-Security-Policy: scripts and styles only from this origin, no inline
code, network only to this origin. `/api/playground/output-size` answers the size a start image
will be generated at, from the pipeline's own arithmetic, so the page never re-implements it;
`/api/playground/start-image` fetches a start image URL as a job would and returns its size and a
small preview, so the page never loads anything from the image's host.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image, ImageOps
from pydantic import ValidationError
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from pipeline.engine import output_size
from pipeline.params import GenerationParams, describe_errors
from server.api.deps import Services, current_owner, read_json, services
from server.api.errors import APIError
from server.core.image_fetch import ImageFetchError, fetch_image

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/playground"
MAX_IMAGE_SIDE = 100_000  # a sanity bound on the reported image size (the fetcher caps real images)
PREVIEW_SIDE = 320  # the URL preview's longest side, in pixels

router = APIRouter(tags=["playground"])


def content_security_policy(public_url: str = "") -> str:
    """The page's policy: everything from this origin only; result videos also from `public_url`'s.

    `blob:` and `data:` images are the start image's preview and the history's poster frames
    (fetched with the API key, so they cannot be plain `<img src>` URLs).
    """
    media = "'self'"
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            media += f" {parts.scheme}://{parts.netloc}"
    return "; ".join((
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:",
        f"media-src {media} blob:", "connect-src 'self'", "font-src 'self'", "object-src 'none'",
        "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
    ))


def page_headers(public_url: str = "") -> dict[str, str]:
    """Security headers for the page and its files."""
    return {"Content-Security-Policy": content_security_policy(public_url), "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


class PlaygroundFiles(StaticFiles):
    """The page's script and style, with the page's security headers (ETags and ranges as StaticFiles)."""

    def __init__(self, public_url: str = ""):
        super().__init__(directory=STATIC_DIR)
        self.headers = page_headers(public_url)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.headers)
        return response


@router.get("/", include_in_schema=False)
def playground_page(svc: Services = Depends(services)) -> FileResponse:  # noqa: B008
    """The playground (no key needed to load the page; every API call it makes sends one)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=page_headers(svc.config.public_url))


@router.get("/api/playground/output-size", dependencies=[Depends(current_owner)])
def playground_output_size(width: int, height: int, resolution: str = "auto") -> JSONResponse:
    """The (width, height) a start image of `width`x`height` is generated at for `resolution`."""
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise APIError(400, "invalid_params", f"width and height must be between 1 and {MAX_IMAGE_SIDE}")
    check_resolution(resolution)
    return JSONResponse(sized(width, height, resolution))


def check_resolution(resolution: str) -> None:
    """400 with the model's own sentence for a resolution it would refuse."""
    try:
        GenerationParams(prompt="size", resolution=resolution)
    except ValidationError as exc:
        raise APIError(400, "invalid_params", "; ".join(str(e) for e in describe_errors(exc))) from None


def sized(width: int, height: int, resolution: str) -> dict[str, Any]:
    out_width, out_height = output_size(resolution, width, height)
    return {"width": out_width, "height": out_height, "resolution": resolution}


def preview_jpeg(data: bytes) -> str:
    """A small upright JPEG of the image as a data: URI (the page may load nothing from other origins)."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    upright.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    upright.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


@router.post("/api/playground/start-image", dependencies=[Depends(current_owner)])
async def playground_start_image(request: Request, svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Fetch a start image URL as a job would (same SSRF checks and limits) and describe it:
    `{width, height, output: {width, height, resolution}, preview}`. The page shows a URL's preview
    and size through this, so the browser never contacts the image's host."""
    data = await read_json(request, 2**16)
    if not isinstance(data, dict) or not isinstance(data.get("input_image"), str):
        raise APIError(400, "invalid_params", "input_image: must be an http(s) URL")
    url, resolution = data["input_image"].strip(), data.get("resolution", "auto")
    if not url.lower().startswith(("http://", "https://")):
        raise APIError(400, "invalid_params", "input_image: must be an http(s) URL (files are described in the page)")
    if not isinstance(resolution, str):
        raise APIError(400, "invalid_params", "resolution: must be a string")
    check_resolution(resolution)
    config = svc.config
    try:
        image, (width, height) = await anyio.to_thread.run_sync(lambda: fetch_image(
            url, allow_private=config.allow_private_urls, timeout=config.fetch_timeout,
            max_bytes=config.fetch_max_bytes))
    except ImageFetchError as exc:
        raise APIError(400, "invalid_params", str(exc)) from None
    preview = await anyio.to_thread.run_sync(preview_jpeg, image)
    return JSONResponse({"width": width, "height": height, "output": sized(width, height, resolution),
                         "preview": preview})
