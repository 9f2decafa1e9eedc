"""The HTTP edge: Oxen's inference API under `/api`, health, metrics and result files.

This process never generates: it validates, fetches the start image, writes jobs to the store
and reads them back. Workers (separate processes) do the rest; see `server.worker`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.params import SEED_RANGE, RequestError
from pipeline.request import MODEL_ID
from server.auth import LOCAL_OWNER, KeyRing, is_loopback
from server.config import ServerConfig
from server.events import COMPLETED, EventHub
from server.image_fetch import ImageFetchError, fetch_image_bytes
from server.schemas import (
    QueueBody,
    SyncGenerateBody,
    describe_request_error,
    echo_input_image,
    error_envelope,
    generation_row,
    model_not_found,
    model_object,
    parse_body,
    request_schema,
    video_request,
)
from server.signing import URLSigner
from server.store import ACTIVE, STATUSES, TERMINAL, Job, JobEvent, JobStore, NewJob

log = logging.getLogger("ltx_server.api")

SYNC_POLL_SECONDS = 0.25
READY_MAX_AGE = 10.0  # a worker row older than this is not counted as ready (workers refresh every 2 s)


class APIError(Exception):
    """An error answered with the contract's envelope (or a custom body)."""

    def __init__(self, status: int, kind: str, detail: str | None = None, body: dict[str, Any] | None = None):
        super().__init__(detail or kind)
        self.status, self.kind, self.detail, self.body = status, kind, detail, body


class Metrics:
    """Prometheus metrics of one API process (queue depth is read from the store at scrape time)."""

    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        self.enqueued = Counter("ltx_jobs_enqueued", "Jobs accepted.", ["endpoint"], registry=self.registry)
        self.rejected = Counter("ltx_requests_rejected", "Requests refused with 4xx.", ["reason"],
                                registry=self.registry)
        self.jobs = Gauge("ltx_jobs", "Jobs in the store by status.", ["status"], registry=self.registry)
        self.workers = Gauge("ltx_workers_ready", "Workers with their model loaded.", registry=self.registry)
        self.store = store

    def render(self) -> bytes:
        for status, count in self.store.counts().items():
            self.jobs.labels(status).set(count)
        self.workers.set(sum(1 for w in self.store.live_workers(READY_MAX_AGE) if w["ready"]))
        return generate_latest(self.registry)


def create_app(config: ServerConfig, store: JobStore | None = None, keys: KeyRing | None = None) -> FastAPI:
    """Build the API for a configuration (the store is opened here unless given)."""
    store = store or JobStore(config.store_url)
    keys = keys or KeyRing.load(config.api_keys_file, config.api_keys)
    signer = URLSigner.from_data_dir(config.data_dir, config.result_url_ttl)
    hub = EventHub(store, config.events_grace_seconds)
    metrics = Metrics(store)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        upkeep = asyncio.create_task(_maintenance(config, store), name="maintenance")
        try:
            yield
        finally:
            upkeep.cancel()
            await hub.stop()

    app = FastAPI(
        title="ltx-server",
        version="0.1.0",
        description="Oxen-compatible inference API for LTX-2.3 image-to-video.",
        lifespan=lifespan,
    )
    app.state.store, app.state.config, app.state.keys = store, config, keys

    # ---- errors: every one in the contract's envelope ------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        if exc.status < 500:
            metrics.rejected.labels(exc.kind).inc()
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

    # ---- helpers -------------------------------------------------------------------------

    def owner_of(request: Request) -> str:
        if keys.enabled:
            owner = keys.owner_for(request.headers.get("authorization"))
            if owner is None:
                raise APIError(401, "unauthenticated", "Missing or invalid API key.")
            return owner
        client = request.client.host if request.client else None
        if not config.insecure and not is_loopback(client):
            raise APIError(401, "unauthenticated",
                           "No API keys are configured, so this server only answers loopback clients.")
        return LOCAL_OWNER

    def base_url(request: Request) -> str:
        return (config.public_url or str(request.base_url)).rstrip("/")

    def result_url(base: str, job: Job) -> str | None:
        if job.status != "succeeded" or not job.result_path or job.result_deleted_at:
            return None
        return f"{base}/api/results/{job.id}.mp4?{signer.query(job.id)}"

    def row(request: Request, job: Job) -> dict[str, Any]:
        return generation_row(job, result_url(base_url(request), job))

    # A body holds at most one data: URI image (base64: 4/3 of its size) plus the parameters.
    max_body = config.fetch_max_bytes * 4 // 3 + 2**20

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            raise APIError(400, "invalid_params", f"The request body is larger than {max_body // 2**20} MiB.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise APIError(400, "invalid_params", f"The request body is larger than {max_body // 2**20} MiB.")
        try:
            return json.loads(bytes(body) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, "invalid_params", f"The request body is not valid JSON ({exc}).") from None

    def check_model(data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("model"), str) and data["model"] != MODEL_ID:
            raise APIError(404, "resource_not_found", body=model_not_found(data["model"]))

    def accept(body_model: type, data: Any, owner: str, copies_field: str | None) -> tuple[Any, list[Job]]:
        """Validate, fetch the image, pick the seed, and enqueue durably (runs in a thread)."""
        check_model(data)
        try:
            body = parse_body(body_model, data)
        except RequestError as exc:
            raise APIError(400, "invalid_params", describe_request_error(exc)) from None
        request_params = video_request(body)
        try:
            image = fetch_image_bytes(
                request_params.input_image, allow_private=config.allow_private_urls,
                timeout=config.fetch_timeout, max_bytes=config.fetch_max_bytes,
            )
        except ImageFetchError as exc:
            raise APIError(400, "invalid_params", str(exc)) from None
        if config.gpu_capacity is not None:
            refuse_if_too_large(request_params, image, *config.gpu_capacity)
        digest = hashlib.sha256(image).hexdigest()
        copies = getattr(body, copies_field) if copies_field else 1
        new_jobs = []
        for _ in range(copies):
            params = request_params.model_dump()
            # The bytes are stored once beside the jobs; the record keeps a data: URI's header only.
            params["input_image"] = echo_input_image(params["input_image"])
            if params["seed"] is None:  # chosen now, so a retried job reproduces the same video
                params["seed"] = secrets.randbelow(SEED_RANGE)
            new_jobs.append(NewJob(owner=owner, model=MODEL_ID, params=params, input_sha256=digest))
        return body, store.enqueue(new_jobs, image)

    def body_doc(model: type) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": model.model_json_schema()}}}}

    # ---- the Oxen API ---------------------------------------------------------------------

    @app.post("/api/ai/queue", status_code=200, openapi_extra=body_doc(QueueBody), tags=["queue"])
    async def enqueue(request: Request) -> JSONResponse:
        """Enqueue 1-4 generations; the jobs are durable before this answers."""
        owner = owner_of(request)
        data = await read_json(request)
        _body, created = await anyio.to_thread.run_sync(accept, QueueBody, data, owner, "num_generations")
        metrics.enqueued.labels("queue").inc(len(created))
        return JSONResponse({"generations": [{"generation_id": j.id, "status": j.status} for j in created]})

    @app.post("/api/ai/videos/generate", openapi_extra=body_doc(SyncGenerateBody), tags=["generate"])
    async def generate(request: Request) -> JSONResponse:
        """Generate and wait: the job goes through the same queue; the answer comes when it ends."""
        owner = owner_of(request)
        data = await read_json(request)
        body, created = await anyio.to_thread.run_sync(accept, SyncGenerateBody, data, owner, None)
        metrics.enqueued.labels("sync").inc()
        job = created[0]
        while job.status not in TERMINAL:
            await asyncio.sleep(SYNC_POLL_SECONDS)
            if await request.is_disconnected():  # nobody will receive it: free the worker
                await anyio.to_thread.run_sync(store.cancel, job.id)
                log.info("sync client went away; cancelled %s", job.id)
                return JSONResponse({}, status_code=499)
            job = await anyio.to_thread.run_sync(store.get, job.id) or job
        if job.status != "succeeded":
            raise APIError(500, "unknown_error", job.error_message or f"The generation was {job.status}.")
        if body.response_format == "b64_json":
            data_bytes = await anyio.to_thread.run_sync((config.data_dir / job.result_path).read_bytes)
            video: dict[str, str] = {"b64_json": base64.b64encode(data_bytes).decode("ascii")}
        else:
            video = {"url": result_url(base_url(request), job) or ""}
        return JSONResponse({"model": MODEL_ID, "created": int(job.completed_at or time.time()), "videos": [video]})

    @app.get("/api/ai/queue/{generation_id}", tags=["queue"])
    def get_generation(generation_id: str, request: Request) -> JSONResponse:
        """One generation, in any state (records persist)."""
        job = store.get(generation_id, owner=owner_of(request))
        if job is None:
            raise APIError(404, "resource_not_found")
        return JSONResponse(row(request, job))

    @app.get("/api/ai/queue", tags=["queue"])
    def list_generations(
        request: Request,
        model: str | None = None,
        status: str | None = None,
        media_type: str | None = None,
        namespace: str | None = None,
        repo: str | None = None,
        folder: str | None = None,
    ) -> JSONResponse:
        """The caller's generations; without `status`, only queued and processing ones.

        `namespace`, `repo` and `folder` name Oxen repositories, which this server does not
        have; they are accepted and do not filter.
        """
        owner = owner_of(request)
        statuses: tuple[str, ...] | None = ACTIVE
        if status:
            wanted = tuple(s.strip() for s in status.split(",") if s.strip())
            if "all" in wanted:
                statuses = None
            else:
                unknown = [s for s in wanted if s not in STATUSES]
                if unknown:
                    raise APIError(400, "invalid_params",
                                   f"status must be one of {', '.join(STATUSES)} (got {', '.join(unknown)})")
                statuses = wanted
        found = store.list(owner=owner, statuses=statuses, model=model, media_type=media_type)
        return JSONResponse({"count": len(found), "generations": [row(request, job) for job in found]})

    @app.delete("/api/ai/queue/{generation_id}", tags=["queue"])
    def cancel_generation(generation_id: str, request: Request) -> JSONResponse:
        """Cancel: a queued job at once, a processing one within one denoising step."""
        job = store.cancel(generation_id, owner=owner_of(request))
        if job is None:
            raise APIError(404, "resource_not_found")
        return JSONResponse({"status": "success", "generation_id": generation_id})

    @app.get("/api/events", tags=["events"])
    async def events(request: Request) -> StreamingResponse:
        """Server-Sent Events for the caller's generations (completions, plus extensions)."""
        owner = owner_of(request)
        base = base_url(request)

        def decorate(event: JobEvent) -> dict[str, Any]:
            payload = dict(event.payload)
            if event.name == COMPLETED and payload.get("status") == "succeeded":
                payload["url"] = f"{base}/api/results/{event.job_id}.mp4?{signer.query(event.job_id)}"
            return payload

        stream = hub.stream(owner, config.keepalive_seconds, request.is_disconnected, decorate)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    @app.get("/api/ai/models", tags=["models"])
    def list_models(request: Request) -> JSONResponse:
        """The one model served here (with the tiny-model notice when it is the smoke-test model)."""
        owner_of(request)  # the contract authenticates every request under /api
        return JSONResponse({"object": "list", "data": [model_object(current_notice())]})

    @app.get("/api/ai/models/{model_id}", tags=["models"])
    def get_model(model_id: str, request: Request) -> JSONResponse:
        """The model object with its request schema."""
        owner_of(request)
        if model_id != MODEL_ID:
            raise APIError(404, "resource_not_found", body=model_not_found(model_id))
        return JSONResponse(model_object(current_notice()))

    def current_notice() -> str | None:
        live = store.live_workers(READY_MAX_AGE)
        notices = [w["notice"] for w in live if w["ready"] and w["smoke_test"]]
        if notices:
            return notices[0]
        if any(w["ready"] for w in live):
            return None
        return config.weights_notice

    # ---- results ---------------------------------------------------------------------------

    @app.api_route("/api/results/{generation_id}.mp4", methods=["GET", "HEAD"], tags=["results"])
    def result_file(generation_id: str, expires: str = "", signature: str = "") -> FileResponse:
        """The MP4 behind a signed result URL (byte ranges supported)."""
        if not signer.verify(generation_id, expires, signature):
            raise APIError(403, "unauthenticated", "This result URL is invalid or has expired.")
        job = store.get(generation_id)
        if job is None or job.status != "succeeded" or not job.result_path or job.result_deleted_at:
            raise APIError(404, "resource_not_found")
        path = config.data_dir / job.result_path
        if not path.is_file():
            raise APIError(404, "resource_not_found")
        return FileResponse(path, media_type="video/mp4", filename=f"{generation_id}.mp4",
                            content_disposition_type="inline")

    # ---- operations ----------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the API process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """Readiness: at least one worker has its model loaded."""
        ready = [w for w in store.live_workers(READY_MAX_AGE) if w["ready"]]
        body = {"status": "ready" if ready else "starting", "workers_ready": len(ready)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.state.request_schema = request_schema()
    return app


def refuse_if_too_large(request: Any, image: bytes, plan: str, vram_bytes: int) -> None:
    """400 before queueing when the job's estimated GPU memory exceeds what the plan leaves usable."""
    from pipeline.geometry import plan_geometry
    from pipeline.memory_plan import RequestTooLarge, Shape, check_request
    from pipeline.start_image import decode_start_image

    start = decode_start_image(image)  # orientation applied: `auto` sizes follow the upright image
    geometry = plan_geometry(request, start.width, start.height)
    try:
        check_request(plan, Shape(geometry.width, geometry.height, request.num_frames,
                                  float(geometry.fps)), vram_bytes)
    except RequestTooLarge as exc:
        raise APIError(400, "invalid_params", str(exc)) from None


async def _maintenance(config: ServerConfig, store: JobStore) -> None:
    """Periodic upkeep: recover abandoned jobs, apply the retention policy, prune old events."""
    interval = max(0.5, min(30.0, config.lease_seconds / 4))
    while True:
        try:
            await anyio.to_thread.run_sync(_upkeep_once, config, store)
        except Exception:
            log.exception("maintenance failed; retrying")
        await asyncio.sleep(interval)


def _upkeep_once(config: ServerConfig, store: JobStore, now: float | None = None) -> None:
    now = time.time() if now is None else now
    for job_id in store.recover_abandoned(now):
        log.warning("job %s: worker lost (lease expired); retried or failed", job_id)
    if config.retention_hours > 0:
        apply_retention(store, config.data_dir, config.retention_hours, now)
    store.prune_events(now - max(3600.0, 2 * config.events_grace_seconds))
    store.prune_inputs(now - 600.0)  # start images are needed only while their jobs are active


def apply_retention(store: JobStore, data_dir: Path, retention_hours: float, now: float | None = None) -> list[str]:
    """Delete result files older than the retention period; their records stay and say so."""
    now = time.time() if now is None else now
    deleted = []
    for job in store.expired_results(now - retention_hours * 3600):
        path = data_dir / (job.result_path or "")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
        store.mark_result_deleted(
            job.id, f"The result was deleted on {when} by this server's retention policy "
                    f"({retention_hours:g} hours after completion).", now)
        deleted.append(job.id)
    if deleted:
        log.info("retention: deleted %d result file(s)", len(deleted))
    return deleted
