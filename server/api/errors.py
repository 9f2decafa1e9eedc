"""Errors in the Oxen envelope: `APIError`, the envelope itself, and the app's exception handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ltx_server.api")


class APIError(Exception):
    """An error answered with the contract's envelope (or a custom body)."""

    def __init__(self, status: int, kind: str, detail: str | None = None, body: dict[str, Any] | None = None):
        super().__init__(detail or kind)
        self.status, self.kind, self.detail, self.body = status, kind, detail, body


ERROR_TITLES = {
    "unauthenticated": "Authentication required: provide a valid API key as 'Authorization: Bearer <key>'.",
    "invalid_params": "Invalid parameters supplied, please check your request and try again.",
    "resource_not_found": "The requested resource could not be found",
    "unknown_error": "An unknown error occurred.",
}


def error_envelope(kind: str, detail: str | None = None) -> dict[str, Any]:
    """The contract's error body."""
    error: dict[str, Any] = {"type": kind, "title": ERROR_TITLES[kind]}
    if detail is not None:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": kind}


def model_not_found(name: str) -> dict[str, Any]:
    """Unknown model: `{"error": {"message": "Model not found: <name>"}}` as Oxen answers."""
    return {"error": {"message": f"Model not found: {name}"}}



def install_handlers(app: FastAPI, on_rejected: Any = None) -> None:
    """Every error in the contract's envelope; `on_rejected(kind)` counts 4xx refusals (metrics)."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        if exc.status < 500 and on_rejected is not None:
            on_rejected(exc.kind)
        return JSONResponse(exc.body or error_envelope(exc.kind, exc.detail), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {401: "unauthenticated", 404: "resource_not_found"}.get(exc.status_code)
        if kind is None:
            kind = "invalid_params" if exc.status_code < 500 else "unknown_error"
        return JSONResponse(error_envelope(kind, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_envelope("invalid_params", detail), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_envelope("unknown_error", "internal error; see the server log"), status_code=500)
