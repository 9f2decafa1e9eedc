"""LoRA adapters through the API (in-process app) and a worker on the tiny model.

`GET /api/ai/loras` lists the directory (name, size, sha256, rank); a request naming a LoRA the
directory does not hold is a 400 before queueing; a job with LoRAs records them (name, scale,
sha256); the same set on consecutive jobs is not rebuilt; removing them restores the base model
exactly (the cross-process check is tests/e2e/test_cli_extensions.py).
"""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from lora_files import build_tiny_lora
from pipeline.engine import Engine, EngineSpec
from pipeline.errors import LoraError
from pipeline.params import GenerationParams
from server.api.main import create_app
from server.core.config import ServerConfig
from server.worker.worker import Worker
from serverkit import KEY_A, png_bytes, tiny_body


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_weights):
    folder = tmp_path_factory.mktemp("loras")
    build_tiny_lora(tiny_weights, folder / "style.safetensors", rank=4, seed=1)
    build_tiny_lora(tiny_weights, folder / "peft-motion.safetensors", rank=2, seed=2, every=2,
                    prefix="base_model.model.", alpha=4.0)
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    (folder / "notes.txt").write_text("ignored")
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory, lora_dir):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("loras-api"), api_keys=f"alice:{KEY_A}",
                          lora_dir=str(lora_dir))
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}


def test_the_directory_is_listed_with_size_sha256_and_rank(app, lora_dir):
    listing = app.get("/api/ai/loras", headers=auth())
    assert listing.status_code == 200
    rows = {row["name"]: row for row in listing.json()["data"]}
    assert set(rows) == {"style", "peft-motion"}  # the broken file and the text file are not LoRAs
    style = lora_dir / "style.safetensors"
    assert rows["style"]["size"] == style.stat().st_size
    assert rows["style"]["sha256"] == hashlib.sha256(style.read_bytes()).hexdigest()
    assert (rows["style"]["rank"], rows["peft-motion"]["rank"]) == (4, 2)
    assert (rows["style"]["layout"], rows["peft-motion"]["layout"]) == ("diffusers", "peft")
    assert "path" not in rows["style"]
    assert app.get("/api/ai/loras").status_code == 401


@pytest.mark.parametrize(
    ("loras", "start"),
    [
        ([{"name": "nope"}], "loras: unknown LoRA 'nope' (available: peft-motion, style)"),
        ([{"name": "../style"}], "loras: LoRA name '../style' is not a file name"),
        ([{"name": "broken"}], "loras: broken.safetensors: not a safetensors file"),
        ([{"name": "style", "scale": 9}], "loras.0.scale: must be a number between -4 and 4"),
        ([{"name": "style"}, {"name": "style"}], "loras: item 1: LoRA 'style' is given twice"),
        ([{"name": f"l{i}"} for i in range(5)], "loras: must have at most 4 items"),
        ([{"path": "https://example.com/x.safetensors"}], "loras.0.name: is required"),
    ],
)
def test_bad_lora_requests_are_400(app, loras, start):
    response = app.post("/api/ai/queue", headers=auth(), json=tiny_body(loras=loras))
    assert response.status_code == 400
    assert response.json()["error"]["detail"].startswith(start), response.json()["error"]["detail"]


def test_without_a_lora_directory_a_lora_request_is_400(tmp_path):
    config = ServerConfig(data_dir=tmp_path, api_keys=f"alice:{KEY_A}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        assert client.get("/api/ai/loras", headers=auth()).json() == {"object": "list", "data": []}
        response = client.post("/api/ai/queue", headers=auth(), json=tiny_body(loras=[{"name": "style"}]))
        assert response.status_code == 400 and "no LoRA directory (--lora-dir)" in response.json()["error"]["detail"]


def test_the_published_request_schema_lists_loras(app):
    properties = app.get("/api/ai/models/ltx-2-3-quality-image-to-video", headers=auth()).json()[
        "request_schema"]["properties"]
    assert properties["loras"]["maxItems"] == 4 and properties["loras"]["description"].startswith("Extension")


@pytest.fixture(scope="module")
def engine(data_dir, lora_dir) -> Engine:
    return Engine.load(EngineSpec(weights="tiny", data_dir=data_dir, lora_dir=lora_dir))


def test_a_job_records_its_loras_and_scales(app, engine, tmp_path):
    store = app.app.state.store
    for job in store.list(statuses=["queued"]):
        store.cancel(job.id)
    loras = [{"name": "style", "scale": 0.75}, {"name": "peft-motion", "scale": -0.5}]
    response = app.post("/api/ai/queue", headers=auth(), json=tiny_body(seed=3, loras=loras))
    assert response.status_code == 200, response.text
    job_id = response.json()["generations"][0]["generation_id"]
    worker = Worker(store, engine, tmp_path, lease_seconds=30, worker_id="lora")
    worker.load()
    worker.run_job(store.claim_next("lora", 30))
    row = app.get(f"/api/ai/queue/{job_id}", headers=auth()).json()
    assert row["status"] == "succeeded", row
    assert row["loras"] == loras  # the request, echoed
    sha = {r["name"]: r["sha256"] for r in app.get("/api/ai/loras", headers=auth()).json()["data"]}
    assert row["output"]["loras"] == [{**lora, "sha256": sha[lora["name"]]} for lora in loras]


def _params(**extra) -> GenerationParams:
    return GenerationParams(prompt="a tiny test", num_frames=9, resolution="128x128", seed=5,
                            generate_audio=False, **extra)


def test_same_set_is_kept_other_sets_switch_and_none_restores_the_base(engine, tmp_path):
    generator = engine._generator
    image = png_bytes()

    def latent(**extra):
        return generator.denoise(_params(**extra), image, 5).video

    import torch

    with torch.inference_mode():
        base = latent()
        switches = generator.adapters.switches
        styled = latent(loras=[{"name": "style"}])
        again = latent(loras=[{"name": "style"}])
        assert generator.adapters.switches == switches + 1  # the second job with the same set rebuilt nothing
        assert torch.equal(styled, again) and not torch.allclose(styled, base)
        half = latent(loras=[{"name": "style", "scale": 0.5}])
        assert generator.adapters.switches == switches + 2 and not torch.equal(half, styled)
        zero = latent(loras=[{"name": "style", "scale": 0.0}])
        assert torch.equal(zero, base)  # scale 0 adds exact zeros
        assert torch.equal(latent(), base)  # no LoRA after LoRAs: the base model, bit for bit
    assert generator.adapters.device_bytes == 0


def test_an_unknown_lora_at_the_engine_is_refused(engine, tmp_path):
    with pytest.raises(LoraError, match="unknown LoRA 'missing'"):
        engine.generate(_params(loras=[{"name": "missing"}]), png_bytes(), tmp_path / "x.mp4")


def test_loras_are_refused_on_a_compiled_transformer(engine, tmp_path):
    """Compiled blocks would silently ignore adapter hooks: a clear refusal instead of a wrong video."""
    block = engine._generator.components.transformer.transformer_blocks[0]
    block.compile()  # marks the block compiled (compilation itself happens lazily, never here)
    try:
        with pytest.raises(LoraError, match="--compile"):
            engine.generate(_params(loras=[{"name": "style"}]), png_bytes(), tmp_path / "x.mp4")
    finally:
        block._compiled_call_impl = None
