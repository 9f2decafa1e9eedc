"""`serve --gpus-per-job 2` on the CPU (issue 12): each job runs on a group of 2 gloo ranks.

A live server with the real tiny engine (wrapped by the faulty engine for slow jobs): the
contract's flows, one MP4 per job, a cancel reaching both ranks within a step (the group goes
on), a rank killed mid-job and a rank stalled mid-job (a collective times out instead of hanging):
the whole group restarts and the job is retried.
"""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest

from sample_media import read_mp4
from serverkit import tiny_body, wait_for

pytestmark = pytest.mark.slow

SLOW = "[[test-step-delay=0.4]]"


@pytest.fixture(scope="module")
def live(live_server_factory):
    # Collectives time out after 15 s here (300 s by default): the stalled-rank test waits for it.
    server = live_server_factory(["--gpus-per-job", "2", "--lease-seconds", "5"],
                                 env={"LTX_COLLECTIVE_TIMEOUT": "15"}, start=False)
    return server.start(timeout=180)  # two ranks load the model and meet before the group is ready


def enqueue(live, body: dict) -> str:
    response = httpx.post(live.api + "/ai/queue", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["generations"][0]["generation_id"]


def row(live, job_id: str) -> dict:
    return httpx.get(f"{live.api}/ai/queue/{job_id}", timeout=10).json()


def wait_ended(live, job_id: str, timeout: float = 180) -> dict:
    return wait_for(lambda: row(live, job_id), lambda r: r["status"] in ("succeeded", "failed", "cancelled"),
                    timeout=timeout)


def rank_pids(live) -> dict[int, int]:
    """pid of each rank process of this server's group (found by its data dir and rank flag)."""
    pids = {}
    for rank in (0, 1):
        found = subprocess.run(["pgrep", "-f", "--", f"--data-dir {live.data_dir} .*--group-rank {rank} "],
                               capture_output=True, text=True).stdout.split()
        if found:
            pids[rank] = int(found[0])
    return pids


def test_one_group_is_one_worker_and_serves_the_sync_flow(live):
    workers = live.db("SELECT id, ready FROM workers")
    assert len(workers) == 1 and workers[0][1] == 1  # two ranks, one logical worker
    assert "context parallel over 2 ranks (gloo)" in live.log()
    response = httpx.post(live.api + "/ai/videos/generate", json=tiny_body(generate_audio=True), timeout=180)
    assert response.status_code == 200, response.text
    video = httpx.get(response.json()["videos"][0]["url"], timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


def test_polling_flow_writes_exactly_one_mp4(live, tmp_path):
    job_id = enqueue(live, tiny_body(prompt="polled", num_frames=17, resolution="192x128"))
    done = wait_ended(live, job_id)
    assert done["status"] == "succeeded", done
    files = list(live.data_dir.glob(f"results/*/{job_id}*"))
    assert [f.suffix for f in files] == [".mp4"]  # one file, no temporary left behind
    path = tmp_path / "polled.mp4"
    path.write_bytes(httpx.get(done["result_url"], timeout=30).content)
    facts = read_mp4(path)
    assert (facts.width, facts.height, facts.video_frames) == (192, 128, 17)


def test_cancel_mid_job_stops_both_ranks_and_the_group_goes_on(live):
    before = rank_pids(live)
    assert set(before) == {0, 1}
    job_id = enqueue(live, tiny_body(prompt=f"cancel me {SLOW}"))
    wait_for(lambda: row(live, job_id), lambda r: r["status"] == "processing" and r["progress"] > 0.1, timeout=120)
    httpx.delete(f"{live.api}/ai/queue/{job_id}", timeout=10)
    assert row(live, job_id)["status"] == "cancelled"
    wait_for(live.log, lambda text: f"job {job_id}: cancelled" in text, timeout=60)
    after = enqueue(live, tiny_body(prompt="after the cancel"))
    assert wait_ended(live, after)["status"] == "succeeded"
    assert rank_pids(live) == before  # both ranks left the job at the same step: no restart
    assert not list(live.data_dir.glob(f"results/*/{job_id}*"))


def test_a_rank_killed_mid_job_restarts_the_group_and_the_job_is_retried(live):
    before = rank_pids(live)
    job_id = enqueue(live, tiny_body(prompt=f"survive a dead rank {SLOW}"))
    wait_for(lambda: row(live, job_id), lambda r: r["status"] == "processing" and r["progress"] > 0.1, timeout=120)
    os.kill(before[1], signal.SIGKILL)
    done = wait_ended(live, job_id, timeout=240)
    assert done["status"] == "succeeded", done
    attempts = live.db("SELECT attempts FROM jobs WHERE id = ?", job_id)[0][0]
    assert attempts == 2
    assert "rank 1 killed by signal 9; stopping the group" in live.log()
    after = rank_pids(live)
    assert set(after) == {0, 1} and not set(after.values()) & set(before.values())  # a fresh group
    assert len(live.db("SELECT id FROM workers WHERE ready = 1")) == 1


def test_a_stalled_rank_times_out_and_the_job_is_retried_on_a_new_group(live):
    before = rank_pids(live)
    job_id = enqueue(live, tiny_body(prompt=f"outlive a stalled rank {SLOW}"))
    wait_for(lambda: row(live, job_id), lambda r: r["status"] == "processing" and r["progress"] > 0.1, timeout=120)
    os.kill(before[1], signal.SIGSTOP)  # alive but silent: only a timeout can tell
    done = wait_ended(live, job_id, timeout=240)
    assert done["status"] == "succeeded", done
    assert live.db("SELECT attempts FROM jobs WHERE id = ?", job_id)[0][0] == 2
    assert "a rank of the GPU group failed or stopped answering" in live.log()
    after = rank_pids(live)
    assert set(after) == {0, 1} and not set(after.values()) & set(before.values())


def test_out_of_memory_mid_pass_fails_the_job_with_its_phase_and_the_group_restarts(live):
    before = rank_pids(live)
    job_id = enqueue(live, tiny_body(prompt="[[test-oom]] too big"))  # the leader runs out of memory at stage 1
    failed = wait_ended(live, job_id)
    assert failed["status"] == "failed" and failed["error_message"].startswith("Out of memory")
    assert "stage1" in failed["error_message"]
    # The other rank was left inside the pass: the group restarts, then serves the next job.
    after = enqueue(live, tiny_body(prompt="after the out-of-memory"))
    assert wait_ended(live, after, timeout=240)["status"] == "succeeded"
    assert not set(rank_pids(live).values()) & set(before.values())
    assert live.db("SELECT status, attempts FROM jobs WHERE id = ?", job_id)[0] == ("failed", 1)
