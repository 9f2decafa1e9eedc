"""The web playground: `/` (one static page with its script and style) and the size `auto` will pick.

The page is plain files in `server/api/static/` (no build step, nothing from another origin),
served with a strict Content-Security-Policy: scripts and styles only from this origin, no inline
code, network only to this origin. `/api/playground/output-size` answers the size a start image
will be generated at, from the pipeline's own arithmetic, so the page never re-implements it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from pipeline.engine import output_size
from pipeline.params import GenerationParams, describe_errors
from server.api.deps import Services, current_owner, services
from server.api.errors import APIError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/playground"
MAX_IMAGE_SIDE = 100_000  # a sanity bound on the reported image size (the fetcher caps real images)

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
    try:
        GenerationParams(prompt="size", resolution=resolution)
    except ValidationError as exc:
        raise APIError(400, "invalid_params", "; ".join(str(e) for e in describe_errors(exc))) from None
    out_width, out_height = output_size(resolution, width, height)
    return JSONResponse({"width": out_width, "height": out_height, "resolution": resolution})
