"""Requests that cannot fit the GPU's memory plan are refused with 400 before they are queued.

`serve` sets the capacity from the smallest visible GPU when real weights load; there is no GPU
here, so the app is built with a stated capacity (a 24 GiB card under plan `offload`).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipeline.engine import Capacity
from server.api.errors import APIError
from server.api.main import create_app
from server.api.schemas import MODEL_ID, QueueBody
from server.api.services.accept import refuse_if_too_large
from server.core.config import ServerConfig
from serverkit import data_uri, png_bytes

GiB = 2**30


def body(**extra) -> dict:
    return {"model": MODEL_ID, "prompt": "a tall ship", "input_image": data_uri(png_bytes(64, 48)), **extra}


def test_refusal_names_the_size_and_what_fits():
    request = QueueBody.model_validate(body(resolution="square_hd", num_frames=481))
    with pytest.raises(APIError) as caught:
        refuse_if_too_large(request, (64, 48), Capacity("offload", 24 * GiB))
    assert caught.value.status == 400
    detail = caught.value.detail
    assert "1024x1024" in detail and "481" in detail and "frames fit" in detail


def test_a_request_that_fits_passes():
    request = QueueBody.model_validate(body(resolution="landscape_16_9", num_frames=121))
    refuse_if_too_large(request, (64, 48), Capacity("offload", 24 * GiB))


def test_the_queue_endpoint_refuses_before_queueing(tmp_path):
    config = ServerConfig(data_dir=tmp_path, gpu_capacity=("offload", 24 * GiB))
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        too_large = client.post("/api/ai/queue", json=body(resolution="square_hd", num_frames=481))
        assert too_large.status_code == 400
        assert too_large.json()["error"]["type"] == "invalid_params"
        assert "GiB of GPU memory" in too_large.json()["error"]["detail"]
        assert client.get("/api/ai/queue", params={"status": "all"}).json()["count"] == 0
        fits = client.post("/api/ai/queue", json=body(resolution="landscape_16_9", num_frames=121))
        assert fits.status_code == 200
        assert client.get("/api/ai/queue", params={"status": "all"}).json()["count"] == 1
