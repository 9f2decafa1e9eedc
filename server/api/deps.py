"""What every route needs: the app's services, the caller's owner id, the body (size-capped), URLs.

`create_app` puts one `Services` on `app.state.services`; routes take it with `Depends(services)`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from server.api.errors import APIError
from server.api.events import EventHub
from server.api.metrics import Metrics
from server.api.services.janitor import Janitor
from server.core.auth import LOCAL_OWNER, KeyRing, is_loopback
from server.core.config import ServerConfig
from server.core.signing import URLSigner
from server.queue import SUCCEEDED, Job, JobStore, WouldWait
from server.results import ResultStore

QueryModel = TypeVar("QueryModel", bound=BaseModel)
T = TypeVar("T")
QUICK_PAGE_ROWS = 25  # the most rows a list reads and renders in the event loop (tens of us each)


@dataclass
class Services:
    """One API process's collaborators."""

    config: ServerConfig
    store: JobStore
    keys: KeyRing
    signer: URLSigner
    hub: EventHub
    metrics: Metrics
    janitor: Janitor
    results: ResultStore

    @property
    def max_body(self) -> int:
        # A body holds at most one data: URI image (base64: 4/3 of its size) plus the parameters.
        return self.config.fetch_max_bytes * 4 // 3 + 2**20

    def owned_job(self, generation_id: str, owner: str) -> Job:
        """The caller's generation, or the 404 envelope (another key's id is as unknown as a made-up one)."""
        job = self.store.get(generation_id, owner=owner)
        if job is None:
            raise APIError(404, "resource_not_found")
        return job

    async def read_owned_job(self, generation_id: str, owner: str) -> Job:
        """`owned_job` for an `async` route: read in the event loop where the store answers without
        waiting (a SQLite file), else in the thread pool. A status read is the API's most frequent
        call, and the thread hop cost more than the read itself (about 300 of 660 us per read on
        the build machine, `bench/load.py`)."""
        try:
            job = self.store.get_nowait(generation_id, owner=owner)
        except WouldWait:
            return await anyio.to_thread.run_sync(self.owned_job, generation_id, owner)
        if job is None:
            raise APIError(404, "resource_not_found")
        return job

    async def read_page(self, render: Callable[[list[Job], int], T], **filters: Any) -> T:
        """`store.page(**filters)` made into an answer by `render(jobs, total)`. In the event loop
        when the store answers without waiting and the page has at most `QUICK_PAGE_ROWS` rows (the
        list routes' usual case: a thread hop cost more than the read); a longer page would hold
        the loop for milliseconds, so it is read and rendered in the thread pool."""
        limit = filters["limit"]
        probe = min(limit, QUICK_PAGE_ROWS)
        with contextlib.suppress(WouldWait):
            found, total = self.store.page_nowait(**{**filters, "limit": probe})
            if len(found) < probe or probe == limit:  # the whole page: fewer rows than asked means the end
                return render(found, total)
        return await anyio.to_thread.run_sync(lambda: render(*self.store.page(**filters)))

    def base_url(self, request: Request) -> str:
        return (self.config.public_url or str(request.base_url)).rstrip("/")

    def signed_result_url(self, base: str, job_id: str) -> str:
        return f"{base}/api/results/{job_id}.mp4?{self.signer.query(job_id)}"

    def result_url(self, request: Request, job: Job) -> str | None:
        """The signed URL of a job's MP4, or None while there is none."""
        if job.status != SUCCEEDED or not job.result_path or job.result_deleted_at:
            return None
        return self.signed_result_url(self.base_url(request), job.id)


# Both dependencies below are `async def` although they never await: they do no I/O, and FastAPI
# runs a plain `def` dependency in the thread pool -- two thread hops per request on the read path.
async def services(request: Request) -> Services:
    return request.app.state.services


async def current_owner(request: Request, svc: Services = Depends(services)) -> str:  # noqa: B008 (FastAPI idiom)
    """The caller's owner id: from its API key, or `local` for loopback clients when no keys are set."""
    return owner_of(request, svc)


def owner_of(request: Request, svc: Services) -> str:
    """`current_owner` as a plain call (401 envelope when the caller is not allowed)."""
    if svc.keys.enabled:
        owner = svc.keys.owner_for(request.headers.get("authorization"))
        if owner is None:
            raise APIError(401, "unauthenticated", "Missing or invalid API key.")
        return owner
    client = request.client.host if request.client else None
    if not svc.config.insecure and not is_loopback(client):
        raise APIError(401, "unauthenticated",
                       "No API keys are configured, so this server only answers loopback clients.")
    return LOCAL_OWNER


def caller(request: Request) -> tuple[Services, str]:
    """The services and the caller's owner id without `Depends`, for the status reads: FastAPI's
    dependency solving cost ~140 us of the ~410 us a read took in the app (`bench/status_read_cpu.py`)."""
    svc: Services = request.app.state.services
    return svc, owner_of(request, svc)


async def read_json(request: Request, max_body: int) -> Any:
    """The body as JSON, refused (400) past `max_body` bytes before it is all read."""
    too_large = f"The request body is larger than {max_body // 2**20} MiB."
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise APIError(400, "invalid_params", too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            raise APIError(400, "invalid_params", too_large)
    try:
        return json.loads(bytes(body) or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, "invalid_params", f"The request body is not valid JSON ({exc}).") from None
    except RecursionError:  # arrays or objects nested thousands deep: refused, not a crash
        raise APIError(400, "invalid_params", "The request body is nested too deeply to be a request.") from None


def read_query(model: type[QueryModel], request: Request) -> QueryModel:
    """The query string validated by `model`, without FastAPI's per-parameter solving (the list routes:
    eight query parameters cost ~0.5 ms a call there); a bad value is the same 400 as a declared one's."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]) from None


def query_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that reads its query string with `read_query`: one optional parameter a field."""
    fields = model.model_json_schema()["properties"]
    return {"parameters": [{"name": name, "in": "query", "required": False,
                            **({"description": schema.pop("description")} if "description" in schema else {}),
                            "schema": schema} for name, schema in fields.items()]}


def body_doc(model: type) -> dict[str, Any]:
    """OpenAPI for a route that reads its body by hand (so the size cap applies first)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}
