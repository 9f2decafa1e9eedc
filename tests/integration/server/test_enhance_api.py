"""`enhance_prompt` through the API and a worker on the tiny model: the rewrite is stored with the job
and returned by `GET /api/ai/queue/{id}`; a failed rewrite is noted and the original prompt used."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipeline.engine import Engine, EngineSpec
from server.api.main import create_app
from server.core.config import ServerConfig
from server.worker.worker import Worker
from serverkit import KEY_A, tiny_body


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("enhance"), api_keys=f"alice:{KEY_A}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client


@pytest.fixture(scope="module")
def engine(data_dir) -> Engine:
    return Engine.load(EngineSpec(weights="tiny", data_dir=data_dir, enhance_max_tokens=8))


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}


def run(app, engine, tmp_path, **extra) -> dict:
    store = app.app.state.store
    response = app.post("/api/ai/queue", headers=auth(), json=tiny_body(seed=9, **extra))
    assert response.status_code == 200, response.text
    job_id = response.json()["generations"][0]["generation_id"]
    worker = Worker(store, engine, tmp_path, lease_seconds=30, worker_id="enhance")
    worker.load()
    worker.run_job(store.claim_next("enhance", 30))
    return app.get(f"/api/ai/queue/{job_id}", headers=auth()).json()


def test_the_rewrite_is_returned_with_the_job(app, engine, tmp_path):
    row = run(app, engine, tmp_path, enhance_prompt=True)
    assert row["status"] == "succeeded" and row["enhance_prompt"] is True
    assert row["enhanced_prompt"] and row["enhanced_prompt"] != row["prompt"]
    assert row["output"]["enhanced_prompt"] == row["enhanced_prompt"] and "enhance_prompt_note" not in row
    plain = run(app, engine, tmp_path)
    assert "enhanced_prompt" not in plain and "enhance_prompt" not in plain  # off by default, not echoed


def test_a_failed_rewrite_is_noted_and_the_job_still_runs(app, engine, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of patience")

    monkeypatch.setattr(engine._generator.components.text_encoder, "generate", broken)
    row = run(app, engine, tmp_path, enhance_prompt=True)
    assert row["status"] == "succeeded" and row["enhanced_prompt"] == row["prompt"]
    assert row["enhance_prompt_note"].startswith("enhancement failed (RuntimeError: out of patience)")


def test_the_published_request_schema_lists_enhance_prompt(app):
    properties = app.get("/api/ai/models/ltx-2-3-quality-image-to-video", headers=auth()).json()[
        "request_schema"]["properties"]
    assert properties["enhance_prompt"]["default"] is False
    assert properties["enhance_prompt"]["description"].startswith("Extension")
