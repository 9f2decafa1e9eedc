"""The OpenAPI document, made to say what the server really answers.

FastAPI's generated document lists 200 (and a 422 this app never sends: validation errors are
400s in the envelope). Here every operation gets the error responses it can give, with the
envelope's schema (OpenAI's shape under `/v1`), `/metrics` is Prometheus text, and query
parameters the routes parse by hand (`status`) get the pattern they accept, so a client or a
fuzzer generating from the schema sends what the server takes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from server.queue import STATUSES

_STATUS_WORD = f"(?:{'|'.join(STATUSES)})"
# `status`: one status, a comma-separated list of them, or `all` (see `routes.queue.parse_statuses`).
STATUS_PATTERN = rf"^(?:all|{_STATUS_WORD}(?:,{_STATUS_WORD})*)$"

OXEN_ERROR = {
    "type": "object",
    "description": "Oxen's error envelope (an unknown model answers `{\"error\": {\"message\": ...}}`).",
    "required": ["error"],
    "properties": {
        "error": {"type": "object", "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"},
            "message": {"type": "string"}}},
        "status": {"type": "string", "enum": ["error"]},
        "status_message": {"type": "string"},
    },
}
OPENAI_ERROR = {
    "type": "object",
    "description": "OpenAI's error shape.",
    "required": ["error"],
    "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
DESCRIPTIONS = {
    "400": "Invalid parameters (the detail names the field).",
    "401": "Missing or invalid API key.",
    "403": "The signed URL is invalid or has expired.",
    "404": "Unknown generation, file or model.",
    "405": "Method not allowed (see the Allow header).",
    "409": "The video is not ready.",
    "429": "Too many requests or too many active jobs for this key (see Retry-After).",
    "503": "The job store is temporarily unavailable (see Retry-After).",
}
SUBMIT = {("post", "/api/ai/queue"), ("post", "/api/ai/videos/generate"), ("post", "/v1/videos")}
OPEN = ("/healthz", "/readyz", "/metrics")


def error_statuses(method: str, path: str) -> list[str]:
    """The error statuses one operation can answer."""
    if path in OPEN:
        return ["503"] if path == "/readyz" else []
    if path.startswith("/api/results/"):
        return ["400", "403", "404", "503"]
    codes = ["400", "401", "404", "503"]
    if (method, path) in SUBMIT:
        codes.append("429")
    if path == "/v1/videos/{video_id}/content":
        codes.append("409")
    return sorted(codes)


def refine(doc: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses, the media types and the hand-parsed parameters' patterns."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["OxenError"], schemas["OpenAIError"] = OXEN_ERROR, OPENAI_ERROR
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            ref = "#/components/schemas/" + ("OpenAIError" if path.startswith("/v1/") else "OxenError")
            for code in error_statuses(method, path):
                responses[code] = {"description": DESCRIPTIONS[code],
                                   "content": {"application/json": {"schema": {"$ref": ref}}}}
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "status" and parameter["in"] == "query":
                    parameter["schema"] = {"type": "string", "pattern": STATUS_PATTERN}
    doc["paths"]["/metrics"]["get"]["responses"]["200"] = {
        "description": "Prometheus text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}}}
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the refined document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(get_openapi(title=app.title, version=app.version,
                                                    description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
