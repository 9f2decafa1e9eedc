"""`GET /api/ai/loras` (extension): the LoRA adapters requests may name in `loras`."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipeline.engine import list_loras
from server.api.deps import Services, current_owner, services

log = logging.getLogger("ltx_server.api")
router = APIRouter(tags=["loras"], dependencies=[Depends(current_owner)])


@router.get("/api/ai/loras")
async def get_loras(svc: Services = Depends(services)) -> JSONResponse:  # noqa: B008
    """Name, size, sha256, rank, layout and adapted layers of each usable file of `--lora-dir`."""
    # Hashing a new file reads it once (cached after): off the event loop.
    found, skipped = await run_in_threadpool(list_loras, svc.config.lora_path)
    for reason in skipped:
        log.warning("LoRA directory: %s", reason)
    return JSONResponse({"object": "list", "data": [lora.as_dict() for lora in found]})
