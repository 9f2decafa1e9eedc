"""`serve --api-cpus`: the API keeps its CPUs, the workers get the others, and a job still runs."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from server.core.cpus import format_cpu_list
from serverkit import REPO, tiny_body

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to split")]


def test_the_api_and_the_workers_run_on_separate_cpus(live_server_factory):
    api_cpu = min(os.sched_getaffinity(0))
    live = live_server_factory(["--api-cpus", str(api_cpu)])
    assert os.sched_getaffinity(live.process.pid) == {api_cpu}
    assert os.sched_getaffinity(live.worker_pid()) == os.sched_getaffinity(0) - {api_cpu}
    response = httpx.post(live.api + "/ai/videos/generate", json=tiny_body(), timeout=180)
    assert response.status_code == 200, response.text
    assert f"API pinned to CPU {api_cpu}; workers on CPU" in live.log()


def test_a_split_that_leaves_the_workers_no_cpu_is_refused(tmp_path):
    every = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    result = subprocess.run(
        [sys.executable, "-m", "server.entrypoints.cli", "serve", "--weights", "tiny", "--data-dir", str(tmp_path),
         "--api-cpus", every], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    cpus = format_cpu_list(os.sched_getaffinity(0))
    assert result.stderr.strip().splitlines()[-1] == (
        f"ltx-server serve: error: --api-cpus {cpus} leaves no CPU for the workers (available: {cpus}).")
    assert "Traceback" not in result.stderr
