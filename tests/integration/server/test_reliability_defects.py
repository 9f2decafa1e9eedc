"""Defects found by the reliability battery, on the app in-process and the store: leftover temporary
files are swept, dead workers' rows stop counting as ready, 405 keeps `Allow`, and the OpenAPI
document says what the server answers and accepts."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from pipeline.params import MAX_PROMPT_CHARS, RESOLUTION_CHOICES, RESOLUTION_PATTERN
from server.api.main import create_app
from server.api.metrics import ready_workers
from server.api.openapi import STATUS_PATTERN
from server.api.services.janitor import Janitor
from server.core.config import ServerConfig
from server.core.debris import leftover_job_id, sweep_leftovers
from server.core.liveness import local_worker_gone
from server.core.paths import DataPaths
from server.queue import JobStore, NewJob
from serverkit import KEY_A, png_bytes, tiny_body


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def enqueue_one(store: JobStore, owner: str = "o") -> str:
    image = png_bytes()
    (job,) = store.enqueue([NewJob(owner=owner, model="m", params={"prompt": "p"},
                                   input_sha256=hashlib.sha256(image).hexdigest())], image)
    return job.id


# ---- leftovers of interrupted writes --------------------------------------------------------


def test_leftover_names_are_recognised():
    job = "3f1c2a9e-0000-4000-8000-000000000001"
    assert leftover_job_id(f".{job}.mp4.k2j4h5l6.partial") == job
    assert leftover_job_id(f".{job}.mp4.k2j4h5l6.f32") == job
    for other in (f"{job}.mp4", f".{job}.mp4", "notes.partial", f".{job}.png.abc.partial"):
        assert leftover_job_id(other) is None


def test_sweep_removes_leftovers_of_jobs_not_running_and_keeps_the_running_ones(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    paths = DataPaths(tmp_path)
    running, ended = enqueue_one(store), enqueue_one(store)
    assert store.claim_next("w1", 60).id == running
    folder = paths.result_file("o", running).parent
    folder.mkdir(parents=True)
    keep = [folder / f".{running}.mp4.aaaa1111.partial", folder / f".{running}.mp4.aaaa1111.f32"]
    gone = [folder / f".{ended}.mp4.bbbb2222.partial", folder / f".{ended}.mp4.bbbb2222.f32",
            folder / ".00000000-dead-beef-0000-000000000000.mp4.cccc3333.partial"]  # no such job at all
    result = folder / f"{ended}.mp4"
    for path in [*keep, *gone, result]:
        path.write_bytes(b"x")
    assert sorted(sweep_leftovers(paths.results, store.running_ids)) == sorted(gone)
    assert all(path.exists() for path in [*keep, result])
    # The janitor's pass does the same once the running job has ended.
    store.fail(running, "w1", "boom")
    Janitor(store, tmp_path, lease_seconds=60).run_once()
    assert not any(path.exists() for path in keep) and result.exists()


# ---- dead workers ----------------------------------------------------------------------------


def test_local_worker_gone_needs_this_host_and_a_dead_pid():
    pid = dead_pid()
    assert local_worker_gone("box-w0-abc123", pid, host="box")
    assert local_worker_gone(f"box-{pid}-abc123", pid, host="box")
    assert not local_worker_gone("box-w0-abc123", 1, host="box")  # pid 1 exists
    assert not local_worker_gone("other-w0-abc123", pid, host="box")  # another host: judged by age
    assert not local_worker_gone("box-b-w0-abc123", pid, host="box")  # host `box-b`, not `box`


def test_fresh_row_of_a_dead_worker_is_not_ready_and_is_removed(tmp_path):
    import socket

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    host = socket.gethostname()
    dead, alive = f"{host}-w0-dead01", f"{host}-w1-a11ve0"
    store.register_worker(dead, "cpu", dead_pid(), True, True, None)
    store.register_worker(alive, "cpu", 1, True, True, None)
    job = enqueue_one(store)
    assert store.claim_next(dead, 60).id == job
    assert [w["id"] for w in ready_workers(store)] == [alive]
    Janitor(store, tmp_path, lease_seconds=60).run_once()
    assert [w["id"] for w in store.all_workers()] == [alive]
    recovered = store.get(job)  # recovered at once, not after the 60 s lease
    assert recovered.status == "queued" and "is gone" in recovered.error_message


def test_readyz_counts_only_live_ready_workers(tmp_path):
    import socket

    config = ServerConfig(data_dir=tmp_path)
    store = JobStore(config.store_url)
    with TestClient(create_app(config, store=store), client=("127.0.0.1", 50000)) as client:
        store.register_worker(f"{socket.gethostname()}-w0-dead02", "cpu", dead_pid(), True, True, None)
        assert client.get("/readyz").status_code == 503
        store.register_worker(f"{socket.gethostname()}-w1-a11ve1", "cpu", 1, True, True, None)
        assert client.get("/readyz").json() == {"status": "ready", "workers_ready": 1}


# ---- HTTP answers ----------------------------------------------------------------------------


def test_405_keeps_allow_and_says_method_not_allowed(client):
    response = client.put("/api/ai/queue", headers=auth(), json={})
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert response.json()["error"]["type"] == "method_not_allowed"
    assert response.json()["status_message"] == "method_not_allowed"


@pytest.mark.parametrize("endpoint", ["/api/ai/queue", "/api/ai/videos/generate"])
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_long_prompts_are_refused_naming_the_field_and_the_limit(client, endpoint, field):
    response = client.post(endpoint, headers=auth(), json=tiny_body(**{field: "a" * (2 * 2**20)}))
    assert response.status_code == 400
    detail = response.json()["error"]["detail"]
    assert detail == f"{field}: must be at most {MAX_PROMPT_CHARS} characters (got {2 * 2**20})"


# ---- the OpenAPI document ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc(client):
    return client.get("/openapi.json").json()


def test_openapi_declares_the_error_answers(doc):
    submit = doc["paths"]["/api/ai/queue"]["post"]["responses"]
    assert {"200", "400", "401", "404", "429", "503"} <= set(submit) and "422" not in submit
    envelope = submit["400"]["content"]["application/json"]["schema"]["$ref"]
    assert envelope == "#/components/schemas/OxenError"
    assert "403" in doc["paths"]["/api/results/{generation_id}.mp4"]["get"]["responses"]
    assert set(doc["paths"]["/api/ai/queue/{generation_id}"]["get"]["responses"]) >= {"401", "404"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_openapi_says_what_is_accepted(doc):
    body = doc["paths"]["/api/ai/queue"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    prompt = body["properties"]["prompt"]
    assert prompt["minLength"] == 1 and prompt["maxLength"] == MAX_PROMPT_CHARS and prompt["pattern"] == r"\S"
    assert body["properties"]["resolution"]["pattern"] == RESOLUTION_PATTERN
    for ok in (*RESOLUTION_CHOICES, "128x128", "2048x1984", "768x512"):
        assert re.search(RESOLUTION_PATTERN, ok), ok
    for bad in ("100x100", "64x128", "2112x128", "auto ", "huge", "128x128x1"):
        assert not re.search(RESOLUTION_PATTERN, bad), bad
    status = next(p for p in doc["paths"]["/api/ai/queue"]["get"]["parameters"] if p["name"] == "status")
    assert status["schema"]["pattern"] == STATUS_PATTERN
    for ok in ("all", "queued", "queued,processing", "succeeded,failed,cancelled"):
        assert re.search(STATUS_PATTERN, ok)
    for bad in ("", "done", "queued,", "all,queued"):
        assert not re.search(STATUS_PATTERN, bad)


def test_sizes_the_schema_allows_are_accepted_by_the_validator():
    from server.api.schemas import VideoRequest

    for size in ("128x128", "2048x2048", "1984x128"):
        VideoRequest(prompt="p", input_image="data:,", resolution=size)


def test_huge_offsets_and_pages_are_empty_pages_not_errors(client):
    """Found by the OpenAPI fuzz: an offset past SQL's 64-bit integers was a 500."""
    for url in (f"/api/ai/queue?offset={10**30}", f"/api/ai/generations?page={10**20}&page_size=1000",
                f"/api/ai/queue?offset={2**63}&limit=5"):
        response = client.get(url, headers=auth())
        assert response.status_code == 200 and response.json()["generations"] == [], url
