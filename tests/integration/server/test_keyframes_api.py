"""Keyframes and end_image through the API (in-process app) and a worker running the tiny model.

Validation (indices, count, duplicate frames, fetch failures) answers 400 naming the field; an
accepted job stores each keyframe image beside it, the worker folds `end_image` into the
keyframes the engine conditions on, and the record echoes the request like Oxen's fields.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipeline.engine import Engine, EngineSpec
from server.api.main import create_app
from server.core.config import ServerConfig
from server.queue import KEYFRAME_IMAGES
from server.worker.worker import Worker
from serverkit import KEY_A, data_uri, png_bytes, tiny_body


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("keyframes"), api_keys=f"alice:{KEY_A}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}


def post(client: TestClient, **extra):
    return client.post("/api/ai/queue", headers=auth(), json=tiny_body(**extra))


BLUE, GREEN = data_uri(png_bytes(color=(20, 40, 220))), data_uri(png_bytes(color=(20, 200, 40)))


@pytest.mark.parametrize(
    ("extra", "start"),
    [
        ({"keyframes": [{"image": BLUE, "frame_index": 9}]}, "keyframes: item 0: frame_index 9 is not a delivered"),
        ({"keyframes": [{"image": BLUE, "frame_index": 0}]}, "keyframes.0.frame_index: must be an integer between 1"),
        ({"keyframes": [{"image": BLUE, "frame_index": 4, "strength": 1.5}]}, "keyframes.0.strength: must be a number"),
        ({"keyframes": [{"image": BLUE, "frame_index": 4}] * 2}, "keyframes: item 1: frame_index 4 is given twice"),
        ({"keyframes": [{"image": BLUE, "frame_index": i} for i in range(1, 9)], "end_image": GREEN},
         "end_image: keyframes and end_image together must be at most 8"),
        ({"keyframes": [{"image": BLUE, "frame_index": 8}], "end_image": GREEN},
         "end_image: a keyframe already conditions the last frame (8)"),
        ({"keyframes": [{"image": "ftp://host/x.png", "frame_index": 4}]}, "keyframes.0.image: must be an http(s)"),
        ({"end_image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "end_image "),
        ({"keyframes": [{"image": BLUE, "frame_index": 3}, {"image": "http://127.0.0.1:1/x.png", "frame_index": 5}]},
         "keyframes[1].image host"),
        ({"keyframes": [{"image": BLUE, "frame_index": 4, "weight": 1}]}, "keyframes.0.weight: is not a parameter"),
    ],
)
def test_bad_keyframes_are_400_naming_the_field(app, extra, start):
    response = post(app, **extra)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["detail"].startswith(start), response.json()["error"]["detail"]


def test_a_body_without_extensions_is_stored_and_echoed_as_before(app):
    job_id = post(app, seed=5).json()["generations"][0]["generation_id"]
    row = app.get(f"/api/ai/queue/{job_id}", headers=auth()).json()
    for name in ("keyframes", "end_image", "end_image_strength", KEYFRAME_IMAGES):
        assert name not in row
    app.delete(f"/api/ai/queue/{job_id}", headers=auth())


@pytest.fixture(scope="module")
def engine(data_dir) -> Engine:
    return Engine.load(EngineSpec(weights="tiny", data_dir=data_dir))


def test_keyframed_job_runs_with_its_images_in_order(app, engine, tmp_path):
    store = app.app.state.store
    for job in store.list(statuses=["queued"]):  # only this test's job is left for the worker to claim
        store.cancel(job.id)
    response = post(app, seed=11, keyframes=[{"image": BLUE, "frame_index": 4, "strength": 0.8}], end_image=GREEN,
                    end_image_strength=0.9)
    assert response.status_code == 200, response.text
    job_id = response.json()["generations"][0]["generation_id"]
    row = app.get(f"/api/ai/queue/{job_id}", headers=auth()).json()
    assert row["keyframes"] == [{"frame_index": 4, "strength": 0.8,
                                 "image": BLUE.split(",")[0] + f",<{len(BLUE)} characters omitted>"}]
    assert row["end_image_strength"] == 0.9 and row["end_image"].endswith("characters omitted>")
    seen = {}

    class Recording:
        info = engine.info

        def generate(self, params, image, output, progress=None, cancel=None, keyframe_images=()):
            seen["keyframes"] = [(k.frame_index, k.strength) for k in params.keyframes]
            seen["images"] = list(keyframe_images)
            return engine.generate(params, image, output, progress, cancel, keyframe_images=keyframe_images)

    worker = Worker(store, Recording(), tmp_path, lease_seconds=30, worker_id="kf")
    worker.load()
    worker.run_job(store.claim_next("kf", 30))
    done = store.get(job_id)
    assert done.status == "succeeded", done.error_message
    assert seen["keyframes"] == [(4, 0.8), (8, 0.9)]  # end_image folded in as the last delivered frame
    assert seen["images"] == [png_bytes(color=(20, 40, 220)), png_bytes(color=(20, 200, 40))]
    assert (tmp_path / done.result_path).stat().st_size > 0


def test_the_published_request_schema_lists_the_extensions(app):
    model = app.get("/api/ai/models/ltx-2-3-quality-image-to-video", headers=auth()).json()
    properties = model["request_schema"]["properties"]
    for name in ("keyframes", "end_image", "end_image_strength"):
        assert name in properties and properties[name]["description"].startswith("Extension")
    assert properties["keyframes"]["maxItems"] == 8


def test_keyframe_images_of_active_jobs_survive_pruning(tmp_path):
    from server.queue import JobStore, NewJob

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    params = {"prompt": "p", "input_image": "data:,", KEYFRAME_IMAGES: ["k1"]}
    (job,) = store.enqueue([NewJob(owner="o", model="m", params=params, input_sha256="s")], b"start", now=0,
                           keyframe_images={"k1": b"key"})
    (ended,) = store.enqueue([NewJob(owner="o", model="m", params={"prompt": "q", KEYFRAME_IMAGES: ["k2"]},
                                     input_sha256="t")], b"other", now=0, keyframe_images={"k2": b"gone"})
    store.prune_inputs(older_than=10)
    assert store.input_image("k2") == b"gone"  # its job is still queued
    store.cancel(ended.id)
    store.prune_inputs(older_than=10)
    assert store.input_image("k1") == b"key" and store.input_image("s") == b"start"
    with pytest.raises(KeyError):
        store.input_image("k2")
    store.cancel(job.id)
    store.prune_inputs(older_than=10)
    with pytest.raises(KeyError):
        store.input_image("k1")
