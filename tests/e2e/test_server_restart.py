"""A server with no API keys and default settings (`--weights auto`, which falls back to the tiny
model without a GPU): loopback-only access, the auto notice, the private-address refusal, and
durability across a clean restart and a hard crash (nothing lost)."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from serverkit import REPO, tiny_body, wait_for

SLOW = "[[test-step-delay=0.3]]"  # the faulty engine (tests/support/faulty_engine.py): keeps a job in flight


@pytest.fixture(scope="module")
def live(live_server_factory):
    return live_server_factory(["--weights", "auto", "--lease-seconds", "3"])  # the last --weights wins


def enqueue(live, body: dict) -> list[str]:
    response = httpx.post(live.api + "/ai/queue", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [g["generation_id"] for g in response.json()["generations"]]


def row(live, job_id: str) -> dict:
    return httpx.get(f"{live.api}/ai/queue/{job_id}", timeout=10).json()


def wait_ended(live, job_id: str) -> dict:
    return wait_for(lambda: row(live, job_id), lambda r: r["status"] in ("succeeded", "failed", "cancelled"),
                    timeout=90)


def statuses(live) -> dict[str, tuple[str, int]]:
    return {r[0]: (r[1], r[2]) for r in live.db("SELECT id, status, attempts FROM jobs")}


def test_no_keys_means_loopback_clients_need_no_key(live):
    assert httpx.get(live.api + "/ai/queue").status_code == 200
    assert httpx.get(live.api + "/ai/queue", headers={"Authorization": "Bearer anything"}).status_code == 200
    assert "loopback clients only" in live.log()


def test_auto_weights_without_gpu_fall_back_to_tiny_loudly(live):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: auto does not fall back for lack of one")
    model = httpx.get(live.api + "/ai/models").json()["data"][0]
    assert model["smoke_test"] is True and "auto: no GPU is visible" in model["notice"]
    assert model["description"].startswith("NOTICE")
    assert "auto: no GPU is visible" in live.log()


def test_private_input_image_refused_with_allow_private_off(live, image_host):
    for host in ("127.0.0.1", "localhost"):
        url = image_host.base.replace("127.0.0.1", host) + "/ok.png"
        response = httpx.post(live.api + "/ai/queue", json=tiny_body(input_image=url), timeout=30)
        assert response.status_code == 400
        detail = response.json()["error"]["detail"]
        assert "resolves to" in detail and "private, loopback or link-local" in detail


def test_clean_restart_with_jobs_queued_and_one_in_flight(live):
    in_flight = enqueue(live, tiny_body(prompt=f"in flight {SLOW}"))[0]
    queued = enqueue(live, tiny_body(prompt="queued", num_generations=2))
    wait_for(lambda: row(live, in_flight), lambda r: r["status"] == "processing")
    assert live.stop(signal.SIGTERM) == 0
    # The stopping worker handed its job back; nothing was lost or half-finished.
    after_stop = statuses(live)
    assert after_stop[in_flight] == ("queued", 0)
    assert all(after_stop[job_id][0] == "queued" for job_id in queued)
    live.start()
    for job_id in [in_flight, *queued]:
        ended = wait_ended(live, job_id)
        assert ended["status"] == "succeeded" and ended["attempts"] == 1, ended
        assert httpx.get(ended["result_url"]).status_code == 200


def test_hard_crash_of_server_and_worker_loses_nothing(live):
    in_flight = enqueue(live, tiny_body(prompt=f"crash victim {SLOW}"))[0]
    queued = enqueue(live, tiny_body(prompt="waiting"))[0]
    wait_for(lambda: row(live, in_flight), lambda r: r["status"] == "processing" and r["progress"] > 0)
    live.stop(signal.SIGKILL, group=True)  # API, supervisor and worker die at once
    assert statuses(live)[in_flight] == ("processing", 1)
    live.start(wait_ready=False)
    live.wait_ready(path="/healthz")  # stale worker rows must not matter: wait for the API only
    # The lease runs out, the job is retried (attempt 2) and succeeds; the queued one runs too.
    ended = wait_ended(live, in_flight)
    assert ended["status"] == "succeeded" and ended["attempts"] == 2
    assert wait_ended(live, queued)["status"] == "succeeded"


def test_refuses_a_public_bind_without_keys(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "serve", "--weights", "tiny", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 with no API keys" in result.stderr and "--insecure" in result.stderr


def test_worker_command_runs_alone_against_a_store(tmp_path):
    import hashlib
    import os
    import subprocess as sp

    from server.api.schemas import VideoRequest
    from server.queue import JobStore, NewJob
    from serverkit import png_bytes

    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    store = JobStore(url)
    image = png_bytes()
    params = VideoRequest(prompt="alone", input_image="data:,", resolution="128x128", num_frames=9,
                          generate_audio=False, seed=3).model_dump()
    (job,) = store.enqueue([NewJob(owner="o", model="m", params=params,
                                   input_sha256=hashlib.sha256(image).hexdigest())], image)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTX_")}
    worker = sp.Popen([sys.executable, "-m", "server.entrypoints.cli", "worker", "--store", url, "--weights", "tiny",
                       "--data-dir", str(tmp_path)], cwd=REPO, env=env, stdout=sp.DEVNULL, stderr=sp.PIPE)
    try:
        done = wait_for(lambda: store.get(job.id), lambda j: j.status in ("succeeded", "failed"), timeout=90)
        assert done.status == "succeeded" and done.info["seed"] == 3
        assert (tmp_path / done.result_path).stat().st_size > 1000
        assert len(store.live_workers(max_age=30)) == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    assert code == 0
    assert store.live_workers(max_age=1e9) == []  # it deregistered on the way out
