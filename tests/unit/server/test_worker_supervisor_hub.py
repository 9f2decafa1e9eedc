"""Worker (with an injected fake Engine), Supervisor (a trivial child) and EventHub, in-process on SQLite."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from pipeline.engine import EngineInfo, Progress, Result
from pipeline.errors import Cancelled, OutOfMemory
from server.api.events import EventHub
from server.queue import JobStore, NewJob
from server.worker.supervisor import Supervisor
from server.worker.worker import Worker

PARAMS = {"prompt": "p", "input_image": "data:,", "resolution": "128x128", "num_frames": 9, "seed": 7}


class FakeEngine:
    """Writes a file; raises what `fault` says; polls cancel between `steps` steps."""

    info = EngineInfo(Path("/fake"), "cpu", True, "NOTICE: fake", "fake 0")

    def __init__(self, fault=None, steps: int = 3, step_seconds: float = 0.0):
        self.fault, self.steps, self.step_seconds = fault, steps, step_seconds

    def generate(self, params, image, output, progress=None, cancel=None, image_crf=None):
        for step in range(self.steps):
            if cancel and cancel():
                raise Cancelled("cancelled")
            if progress:
                progress(Progress("stage1", step + 1, self.steps, (step + 1) / self.steps))
            time.sleep(self.step_seconds)
        if self.fault:
            raise self.fault
        Path(output).write_bytes(b"mp4")
        return Result(Path(output), params.seed, 128, 128, 9, Fraction(24), False, 11)


def setup(tmp_path, engine):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    (job,) = store.enqueue([NewJob(owner="o", model="m", params=PARAMS, input_sha256="s")], b"img")
    worker = Worker(store, engine, tmp_path, lease_seconds=5, worker_id="w")
    worker.load()
    return store, worker, job


def test_worker_claims_and_completes(tmp_path):
    store, worker, job = setup(tmp_path, FakeEngine())
    worker.run_job(store.claim_next("w", 5))
    done = store.get(job.id)
    assert done.status == "succeeded" and done.info["seed"] == 7 and (tmp_path / done.result_path).is_file()
    assert store.live_workers(60)[0]["notice"] == "NOTICE: fake"


def test_worker_factory_is_called_by_load(tmp_path):
    store, worker, _job = setup(tmp_path, lambda: FakeEngine())
    assert worker.engine is not None and worker.engine.info.device == "cpu"


def test_loading_the_model_freezes_the_startup_heap(tmp_path):
    """After load, the model's objects are out of the collector's full passes (they were ~300 ms each)."""
    gc.unfreeze()
    try:
        setup(tmp_path, lambda: FakeEngine())
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_job_that_finishes_while_the_store_is_down_still_succeeds(tmp_path):
    """The last ownership check before publishing waits the store out like the outcome's write does
    (it used to fail a finished job with the connection error)."""
    store, worker, job = setup(tmp_path, FakeEngine())
    real, outage = store.is_still_mine, iter([True, True])

    def flaky(job_id: str, worker_id: str) -> bool:
        if next(outage, False):
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return real(job_id, worker_id)

    store.is_still_mine = flaky
    worker.run_job(store.claim_next("w", 5))
    assert store.get(job.id).status == "succeeded"


def test_out_of_memory_fails_the_job_naming_the_phase(tmp_path):
    oom = OutOfMemory("Out of memory on cpu during decode (boom); try a lower resolution or fewer frames.", "decode")
    store, worker, job = setup(tmp_path, FakeEngine(fault=oom))
    worker.run_job(store.claim_next("w", 5))
    failed = store.get(job.id)
    assert failed.status == "failed" and "during decode" in failed.error_message


def test_stop_requeues_and_cancel_cancels(tmp_path):
    store, worker, job = setup(tmp_path, FakeEngine())
    worker.stop_event.set()
    worker.run_job(store.claim_next("w", 5))
    assert store.get(job.id).status == "queued" and store.get(job.id).attempts == 0
    worker.stop_event.clear()
    worker.engine = FakeEngine(steps=50, step_seconds=0.05)
    claimed = store.claim_next("w", 5)
    runner = threading.Thread(target=worker.run_job, args=(claimed,))
    runner.start()
    time.sleep(0.3)
    store.cancel(job.id)
    runner.join(timeout=10)
    assert store.get(job.id).status == "cancelled" and not list(tmp_path.glob("results/*/*.mp4"))


def test_supervisor_restarts_a_dead_child():
    exits: list[tuple[str, str]] = []
    child = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = Supervisor(child, 1, on_exit=lambda w, r: exits.append((w, r)))
    supervisor.start()
    try:
        deadline = time.monotonic() + 20
        while supervisor.slots[0].restarts < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        supervisor.stop(timeout=5)
    assert supervisor.slots[0].restarts >= 2 and supervisor.slots[0].history[:2] == [3, 3]
    assert exits and "exit status 3" in exits[0][1]


def test_event_hub_delivers_and_honours_the_grace_window(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    old, recent = store.enqueue([NewJob("o", "m", PARAMS, "s"), NewJob("o", "m", PARAMS, "s")], b"img")
    for job, when in ((old, time.time() - 100), (recent, time.time())):
        store.claim_next("w", 5)
        store.complete(job.id, "w", "x.mp4", {}, now=when)

    async def scenario() -> list[str]:
        hub = EventHub(store, grace_seconds=30)
        await hub.start()
        stream = hub.stream("o", 5, lambda: asyncio.sleep(0, False), lambda e: {"id": e.job_id, "name": e.name})
        got = [await anext(stream), await anext(stream)]  # ": connected", then the recent completion only
        (live,) = store.enqueue([NewJob("o", "m", PARAMS, "s")], b"img")
        store.claim_next("w", 5)
        got.append(await asyncio.wait_for(anext(stream), 5))  # a live event: started
        await stream.aclose()
        await hub.stop()
        return [*got, live.id]

    connected, first, started, live_id = asyncio.run(scenario())
    assert connected.startswith(": connected")
    assert recent.id in first and old.id not in first
    assert "media_generation_started" in started and live_id in started


def test_supervisor_lowers_the_workers_cpu_priority():
    """Workers run `nice` below the API (so their CPU work cannot delay HTTP answers); 0 leaves them level.
    Each runs in a session of its own, whose scheduling group (where the kernel has autogroups) is niced too."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    autogroups = Path("/proc/self/autogroup").exists()
    found, groups = {}, {}
    for nice in (7, 0):
        supervisor = Supervisor([sys.executable, "-c", "import time; time.sleep(30)"], 1, nice=nice)
        supervisor.start()
        try:
            pid = supervisor.slots[0].process.pid
            found[nice] = os.getpriority(os.PRIO_PROCESS, pid)
            assert os.getsid(pid) == pid != os.getsid(0)
            if autogroups:
                groups[nice] = Path(f"/proc/{pid}/autogroup").read_text().split()
        finally:
            supervisor.stop(timeout=5)
    assert found == {7: min(own + 7, 19), 0: own}
    if autogroups:
        assert groups[7][-2:] == ["nice", "7"] and groups[0][-2:] == ["nice", "0"]
        # Not the API's group. A process still in the kernel's default group (never under a `setsid`,
        # as in some CI containers) reads its autogroup file empty.
        assert groups[7][:1] != Path("/proc/self/autogroup").read_text().split()[:1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to leave one out")
def test_supervisor_keeps_the_workers_to_their_cpus():
    """`--api-cpus`: workers run only on the CPUs left to them (the API keeps its own)."""
    cpus = {min(os.sched_getaffinity(0))}
    supervisor = Supervisor([sys.executable, "-c", "import time; time.sleep(30)"], 1, cpus=cpus)
    supervisor.start()
    try:
        assert os.sched_getaffinity(supervisor.slots[0].process.pid) == cpus
    finally:
        supervisor.stop(timeout=5)
