"""Errors in the Oxen envelope: `APIError`, the envelope itself, and the app's exception handlers.

Under `/v1` (the OpenAI-style routes) the same errors are answered in OpenAI's shape instead:
`{"error": {"message", "type", "param", "code"}}`, which the `openai` SDK turns into its exceptions.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("ltx_server.api")


class APIError(Exception):
    """An error answered with the contract's envelope (or a custom body)."""

    def __init__(self, status: int, kind: str, detail: str | None = None, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail or kind)
        self.status, self.kind, self.detail, self.body = status, kind, detail, body
        self.headers = headers


ERROR_TITLES = {
    "unauthenticated": "Authentication required: provide a valid API key as 'Authorization: Bearer <key>'.",
    "invalid_params": "Invalid parameters supplied, please check your request and try again.",
    "resource_not_found": "The requested resource could not be found",
    "unknown_error": "An unknown error occurred.",
    # Extensions for statuses Oxen answers without naming a type (403, 405, 429, 503).
    "forbidden": "Access denied: this URL does not grant access to the resource.",
    "method_not_allowed": "This method is not allowed on this resource; see the Allow header.",
    "rate_limited": "Too many requests; retry after the number of seconds in the Retry-After header.",
    "service_unavailable": "The service is temporarily unavailable; retry shortly.",
}

# The envelope's type for an HTTP status the app raises without one of its own.
STATUS_KINDS = {401: "unauthenticated", 403: "forbidden", 404: "resource_not_found",
                405: "method_not_allowed", 429: "rate_limited", 503: "service_unavailable"}


def error_envelope(kind: str, detail: str | None = None) -> dict[str, Any]:
    """The contract's error body."""
    error: dict[str, Any] = {"type": kind, "title": ERROR_TITLES[kind]}
    if detail is not None:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": kind}


def model_not_found(name: str) -> dict[str, Any]:
    """Unknown model: `{"error": {"message": "Model not found: <name>"}}` as Oxen answers."""
    return {"error": {"message": f"Model not found: {name}"}}



class OpenAIError(APIError):
    """An `APIError` that also names OpenAI's `param` and `code` (used by the `/v1` routes)."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        kind = {401: "unauthenticated", 404: "resource_not_found"}.get(status, "invalid_params")
        super().__init__(status, kind if status < 500 else "unknown_error", message)
        self.code, self.param = code, param


STORE_RETRY_AFTER = 5  # seconds a client is asked to wait while the store is unavailable
OPENAI_PREFIX = "/v1/"
OPENAI_CODES = {"unauthenticated": "invalid_api_key", "forbidden": "forbidden", "resource_not_found": "not_found",
                "invalid_params": "invalid_value", "unknown_error": "server_error",
                "method_not_allowed": "method_not_allowed", "rate_limited": "rate_limit_exceeded",
                "service_unavailable": "service_unavailable"}


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX) or request.url.path == OPENAI_PREFIX.rstrip("/")


def openai_envelope(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body; `type` follows OpenAI's use (server_error for 5xx)."""
    kind = "server_error" if status >= 500 else "authentication_error" if status == 401 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _as_openai(exc: APIError) -> dict[str, Any]:
    code = getattr(exc, "code", None) or OPENAI_CODES.get(exc.kind, exc.kind)
    message = exc.detail or ERROR_TITLES.get(exc.kind, exc.kind)
    if exc.body is not None and isinstance(exc.body.get("error"), dict) and exc.body["error"].get("message"):
        message = exc.body["error"]["message"]
    return openai_envelope(exc.status, message, code, getattr(exc, "param", None))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    pending = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        nested = getattr(route, "original_router", None) or getattr(route, "app", None)
        if hasattr(nested, "routes") and not hasattr(route, "methods"):  # an included router
            pending += nested.routes
        # FULL: path and method match; PARTIAL: the path matches, another method is served.
        elif route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_handlers(app: FastAPI, on_rejected: Any = None) -> None:
    """Every error in the contract's envelope; `on_rejected(kind)` counts 4xx refusals (metrics)."""

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        if exc.status < 500 and on_rejected is not None:
            on_rejected(exc.kind)
        if is_openai(_request):
            return JSONResponse(_as_openai(exc), status_code=exc.status, headers=exc.headers)
        return JSONResponse(exc.body or error_envelope(exc.kind, exc.detail), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = STATUS_KINDS.get(exc.status_code)
        if kind is None:
            kind = "invalid_params" if exc.status_code < 500 else "unknown_error"
        # Keep the exception's headers (405's Allow, 429's Retry-After): they are part of the answer.
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(_request))}
        if is_openai(_request):
            return JSONResponse(openai_envelope(exc.status_code, str(exc.detail), OPENAI_CODES[kind]),
                                status_code=exc.status_code, headers=headers)
        return JSONResponse(error_envelope(kind, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors())
        if is_openai(_request):
            first = exc.errors()[0]["loc"] if exc.errors() else ()
            param = str(first[-1]) if len(first) > 1 else None
            return JSONResponse(openai_envelope(400, detail, "invalid_value", param), status_code=400)
        return JSONResponse(error_envelope("invalid_params", detail), status_code=400)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def _store_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # The store is down or locked (PostgreSQL restarting, SQLite busy past its timeout): a
        # temporary condition the client should retry, not an internal error.
        log.warning("store unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        detail = "The job store is temporarily unavailable; retry in a few seconds."
        headers = {"Retry-After": str(STORE_RETRY_AFTER)}
        if is_openai(_request):
            return JSONResponse(openai_envelope(503, detail, "service_unavailable"), status_code=503,
                                headers=headers)
        return JSONResponse(error_envelope("service_unavailable", detail), status_code=503, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        if is_openai(_request):
            return JSONResponse(openai_envelope(500, "internal error; see the server log", "server_error"),
                                status_code=500)
        return JSONResponse(error_envelope("unknown_error", "internal error; see the server log"), status_code=500)
