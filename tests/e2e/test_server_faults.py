"""Faults against a live server (tiny model, 128x128, 9 frames): out-of-memory at each phase and at
load, a full disk (injected ENOSPC, and a real tmpfs where mounting is allowed), the per-job
wall-clock limit, the hung-worker watchdog, and SIGTERM's bound. After each fault the job says
what happened, no temporary file is left, and the next job succeeds."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from server.core.debris import leftover_job_id
from serverkit import tiny_body, wait_for

pytestmark = pytest.mark.slow
JOB_TIMEOUT, WATCHDOG = 20, 8  # seconds; a plain tiny job takes a few seconds on a busy CPU
SIGTERM_BOUND = 30  # seconds: documented in README ("Stopping"): uvicorn 5 s + workers' 20 s grace + margin


@pytest.fixture(scope="module")
def live(live_server_factory):
    return live_server_factory(["--job-timeout", str(JOB_TIMEOUT), "--watchdog-seconds", str(WATCHDOG),
                                "--lease-seconds", "5"])


def enqueue(live, body: dict) -> str:
    response = httpx.post(live.api + "/ai/queue", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["generations"][0]["generation_id"]


def ended(live, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: httpx.get(f"{live.api}/ai/queue/{job_id}", timeout=10).json(),
                    lambda r: r["status"] in ("succeeded", "failed", "cancelled"), timeout=timeout)


def leftovers(live) -> list[str]:
    return [p.name for p in live.data_dir.glob("results/*/.*") if leftover_job_id(p.name)]


@pytest.mark.parametrize("phase", ["prepare", "stage1", "upsample", "stage2", "decode"])
def test_out_of_memory_names_the_phase_and_the_next_job_succeeds(live, phase):
    pid = live.worker_pid()
    failed = ended(live, enqueue(live, tiny_body(prompt=f"[[test-oom={phase}]]", generate_audio=True)))
    assert failed["status"] == "failed" and failed["result_url"] is None
    message = failed["error_message"]
    assert message.startswith("Out of memory on cpu during " + phase), message
    assert "try a lower resolution or fewer frames" in message
    assert ended(live, enqueue(live, tiny_body()))["status"] == "succeeded"
    assert live.worker_pid() == pid and leftovers(live) == []


def test_disk_full_while_writing_fails_clearly_and_the_next_job_succeeds(live):
    failed = ended(live, enqueue(live, tiny_body(prompt="[[test-enospc]]", generate_audio=True)))
    assert failed["status"] == "failed"
    assert failed["error_message"].startswith("The server ran out of disk space while writing the result")
    assert ended(live, enqueue(live, tiny_body()))["status"] == "succeeded"
    assert leftovers(live) == [] and not list(live.data_dir.glob(f"results/*/{failed['generation_id']}.mp4"))
    assert httpx.get(live.base + "/healthz").status_code == 200


def test_job_over_the_wall_clock_limit_is_stopped_and_says_so(live):
    failed = ended(live, enqueue(live, tiny_body(prompt="[[test-step-delay=3]] slow")))
    assert failed["status"] == "failed" and failed["attempts"] == 1
    message = failed["error_message"]
    assert f"past this server's limit of {JOB_TIMEOUT} s per job (--job-timeout)" in message, message
    assert ended(live, enqueue(live, tiny_body()))["status"] == "succeeded"
    assert leftovers(live) == []


def test_hung_worker_is_killed_by_the_watchdog_retried_once_then_failed(live):
    first = live.worker_pid()
    hung = ended(live, enqueue(live, tiny_body(prompt="[[test-step-delay=120]] hangs")), timeout=240)
    assert hung["status"] == "failed" and hung["attempts"] == 2
    message = hung["error_message"]
    assert "made no progress" in message and "killed by the watchdog" in message and "attempt 2 of 2" in message
    assert live.worker_pid() != first
    assert ended(live, enqueue(live, tiny_body()))["status"] == "succeeded"
    assert leftovers(live) == []


def test_sigterm_hands_the_running_job_back_within_the_documented_bound(live):
    job = enqueue(live, tiny_body(prompt="[[test-step-delay=0.3]] in flight"))
    wait_for(lambda: httpx.get(f"{live.api}/ai/queue/{job}").json(), lambda r: r["progress"] > 0)
    # `stop` waits SIGTERM_BOUND seconds, then SIGKILLs the group (return code -9): 0 means a clean stop in time.
    assert live.stop(signal.SIGTERM, timeout=SIGTERM_BOUND) == 0
    assert live.db("SELECT status, attempts FROM jobs WHERE id = ?", job) == [("queued", 0)]
    live.start()
    assert ended(live, job)["status"] == "succeeded"


def test_out_of_memory_at_load_is_reported_and_the_restarted_worker_serves(live_server_factory, tmp_path):
    marker = tmp_path / "oom-at-load"
    marker.write_text("once")
    server = live_server_factory(env={"LTX_TEST_OOM_AT_LOAD": str(marker)}, start=False)
    server.start(wait_ready=False)
    server.wait_ready(path="/healthz")
    job = enqueue(server, tiny_body())
    assert ended(server, job)["status"] == "succeeded"
    assert not marker.exists()
    log = server.log()
    assert "Out of memory on cpu while loading the model" in log and "choose a smaller memory plan (--plan)" in log
    assert "worker 0" in log and "restarting" in log


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_real_full_disk_fails_the_job_and_the_next_succeeds_once_space_is_back(live_server_factory, tmp_path):
    results = tmp_path / "data" / "results"
    if os.geteuid() != 0 or not _mount_tmpfs(results, "4k"):
        pytest.skip("mounting a small tmpfs needs root and mount rights (the injected ENOSPC test runs anyway)")
    try:
        server = live_server_factory(data_dir=tmp_path / "data")
        failed = ended(server, enqueue(server, tiny_body(generate_audio=True)))
        assert failed["status"] == "failed", failed
        assert failed["error_message"].startswith("The server ran out of disk space"), failed["error_message"]
        assert list(results.rglob("*.mp4")) == [] and leftovers(server) == []
        subprocess.run(["mount", "-o", "remount,size=16m", str(results)], check=True)
        assert ended(server, enqueue(server, tiny_body()))["status"] == "succeeded"
        server.cleanup()
    finally:
        subprocess.run(["umount", "-l", str(results)], capture_output=True)
