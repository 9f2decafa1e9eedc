"""The HTTP edge, wired: Oxen's inference API under `/api`, health, metrics and result files.

This process never generates (and never imports torch): it validates, fetches the start image,
writes jobs to the store and reads them back. Workers (separate processes) do the rest; see
`server.worker`. The janitor (recovery and retention) runs here, in the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from server.api.deps import Services
from server.api.errors import install_handlers
from server.api.events import EventHub
from server.api.metrics import Metrics
from server.api.openapi import install_openapi
from server.api.routes import (
    events,
    generate,
    generations,
    loras,
    models,
    openai_videos,
    ops,
    playground,
    queue,
    results,
)
from server.api.schemas import request_schema
from server.api.services.janitor import Janitor
from server.core.auth import KeyRing
from server.core.config import ServerConfig
from server.core.heap import freeze_startup_heap
from server.core.signing import URLSigner
from server.queue import JobStore
from server.results import open_results

ROUTERS = (queue.router, generate.router, generations.router, events.router, models.router, results.router,
           ops.router, openai_videos.router, playground.router)
ROUTERS += (loras.router,)  # extension: the LoRA directory


def create_app(config: ServerConfig, store: JobStore | None = None, keys: KeyRing | None = None,
               janitor: Janitor | None = None) -> FastAPI:
    """Build the API for a configuration (the store, keys and janitor are made here unless given)."""
    store = store or JobStore(config.store_url)
    results = open_results(config.results, config.data_dir, config.s3_endpoint_url)
    svc = Services(
        config=config, store=store, keys=keys or KeyRing.load(config.api_keys_file, config.api_keys),
        signer=URLSigner.from_data_dir(config.data_dir, config.result_url_ttl),
        hub=EventHub(store, config.events_grace_seconds), metrics=Metrics(store),
        janitor=janitor or Janitor.from_config(config, store, results), results=results,
    )

    store.listener.on_lag = svc.metrics.notification_lag.observe

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await svc.hub.start()
        upkeep = asyncio.create_task(svc.janitor.run(), name="janitor")
        freeze_startup_heap()  # the app, its routes and schemas: no full GC pass walks them again
        try:
            yield
        finally:
            upkeep.cancel()
            await svc.hub.stop()

    app = FastAPI(title="ltx-server", version="0.1.0",
                  description="Oxen-compatible inference API for LTX-2.3 image-to-video.", lifespan=lifespan)
    app.state.services = svc
    app.state.store, app.state.config, app.state.keys = store, config, svc.keys
    app.state.request_schema = request_schema()
    install_handlers(app, on_rejected=lambda kind: svc.metrics.rejected.labels(kind).inc())
    for router in ROUTERS:
        app.include_router(router)
    app.mount(playground.STATIC_PREFIX, playground.PlaygroundFiles(config.public_url), name="playground")
    install_openapi(app)
    return app
