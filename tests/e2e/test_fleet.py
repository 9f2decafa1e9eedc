"""A fleet behind one endpoint: two API processes against one PostgreSQL (a fresh schema) and one S3
server process (moto on loopback), as separate machines would run them (separate data directories;
shared store, bucket and URL-signing secret), with three tiny-model workers: API A is `serve
--workers 2`, API B is `serve --api-only`, and the third worker is a standalone `ltx-server worker`
(a GPU node of the compose file).

Shown here: jobs spread over the three workers; an SSE client on API A sees the jobs enqueued
through API B; every result downloads from either API; a worker killed mid-job has its job finished
by another; a cancel sent to B stops a job running under A's client within one step (counted from
the faulty engine's step log lines, JSON logs with the generation id on every job line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text

from s3_server import S3_ENV, running_s3_server
from serverkit import KEY_A, REPO, LiveServer, tiny_body, wait_for

pytestmark = pytest.mark.slow

PG_URL = os.environ.get("LTX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
SLOW_STEP = 0.4  # seconds the faulty engine sleeps after each progress report (jobs of a few seconds)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run starts PostgreSQL; the fleet test must run on it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pg_schema_url():
    schema = f"ltx_fleet_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"PostgreSQL not usable: {exc}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}", admin, schema
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="module")
def fleet(pg_schema_url, tmp_path_factory):
    url, admin, schema = pg_schema_url
    with running_s3_server() as s3:
        bucket = s3.new_bucket()
        env = {**S3_ENV, "LTX_URL_SECRET": "fleet-shared-signing-secret-0123456789"}
        common = ["--store", url, "--results", f"s3://{bucket}/results", "--s3-endpoint-url", s3.endpoint,
                  "--api-keys", f"alice:{KEY_A}", "--lease-seconds", "5", "--log-format", "json",
                  "--keepalive-seconds", "1"]
        api_a = LiveServer(tmp_path_factory.mktemp("node-a"), [*common, "--workers", "2"], env)
        api_b = LiveServer(tmp_path_factory.mktemp("node-b"), [*common, "--api-only"], env)
        gpu_node = tmp_path_factory.mktemp("node-gpu")
        worker_log = gpu_node / "worker.log"
        worker = None
        try:
            api_a.start(wait_ready=False)
            api_b.start(wait_ready=False)  # both nodes migrate the fresh schema at once
            support = str(REPO / "tests" / "support")
            with open(worker_log, "wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "server.entrypoints.cli", "worker", "--store", url, "--data-dir",
                     str(gpu_node), "--weights", "tiny", "--engine", "faulty_engine:load", "--lease-seconds", "5",
                     "--results", f"s3://{bucket}/results", "--s3-endpoint-url", s3.endpoint, "--log-format", "json"],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    env={**{k: v for k, v in os.environ.items() if not k.startswith("LTX_")}, **env,
                         "PYTHONPATH": os.pathsep.join([support, os.environ.get("PYTHONPATH", "")])})
            api_a.wait_ready(240)
            api_b.wait_ready(240)

            def ready_workers() -> int:
                with admin.connect() as conn:
                    return conn.execute(text(f"SELECT count(*) FROM {schema}.workers WHERE ready")).scalar()

            wait_for(ready_workers, lambda n: n == 3, timeout=240, interval=0.5)
            yield {"a": api_a, "b": api_b, "s3": s3, "bucket": bucket, "admin": admin, "schema": schema,
                   "worker_log": worker_log}
        finally:
            if worker is not None and worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            api_a.cleanup()
            api_b.cleanup()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"}


def enqueue(server: LiveServer, prompt: str, count: int = 1) -> list[str]:
    response = httpx.post(server.api + "/ai/queue", headers=auth(), timeout=30,
                          json=tiny_body(prompt, num_generations=count))
    assert response.status_code == 200, response.text
    return [row["generation_id"] for row in response.json()["generations"]]


def status(server: LiveServer, generation_id: str) -> dict:
    return httpx.get(f"{server.api}/ai/queue/{generation_id}", headers=auth(), timeout=10).json()


def row(fleet, generation_id: str) -> dict:
    with fleet["admin"].connect() as conn:
        found = conn.execute(text(f"SELECT * FROM {fleet['schema']}.jobs WHERE id = :i"), {"i": generation_id})
        return dict(found.one()._mapping)


class SSEClient:
    """Collects the events of one API key from one API node, in a thread."""

    def __init__(self, server: LiveServer):
        self.events: list[tuple[str, dict]] = []
        self.connected = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, args=(server,), daemon=True)
        self.thread.start()

    def _run(self, server: LiveServer) -> None:
        with httpx.stream("GET", server.api + "/events", headers=auth(), timeout=httpx.Timeout(10, read=30)) as sse:
            name = None
            for line in sse.iter_lines():
                self.connected.set()
                if self._stop:
                    return
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line[len("data: "):])))

    def completed(self) -> dict[str, str]:
        return {data["generation_id"]: data["status"] for name, data in list(self.events)
                if name == "media_generation_completed"}

    def close(self) -> None:
        self._stop = True


def test_jobs_spread_sse_across_nodes_and_results_from_either_api(fleet):
    api_a, api_b = fleet["a"], fleet["b"]
    sse = SSEClient(api_a)
    assert sse.connected.wait(30)
    ids = enqueue(api_b, f"fleet spread [[test-step-delay={SLOW_STEP}]]", count=4)
    ids += enqueue(api_b, f"fleet spread two [[test-step-delay={SLOW_STEP}]]", count=2)
    wait_for(lambda: [status(api_b, i)["status"] for i in ids], lambda s: set(s) == {"succeeded"}, timeout=300)
    # Jobs spread over the three workers of the two nodes.
    assert len({row(fleet, i)["worker_id"] for i in ids}) == 3
    # The SSE client on A saw every job enqueued through B complete (with a result URL).
    seen = wait_for(sse.completed, lambda done: set(ids) <= set(done), timeout=30)
    assert all(seen[i] == "succeeded" for i in ids)
    sse.close()
    # Results live in the bucket, nowhere on either node's disk, and download from either API.
    assert all(row(fleet, i)["result_path"].startswith(f"s3://{fleet['bucket']}/results/") for i in ids)
    for server in (api_a, api_b):
        assert not list(server.data_dir.rglob("*.mp4"))
    for generation_id in ids:
        bodies = []
        for server in (api_a, api_b):
            url = status(server, generation_id)["result_url"]
            for other in (api_a, api_b):  # a URL signed by one node works on the other (shared secret)
                path = url[url.index("/api/results/"):]
                response = httpx.get(other.base + path, timeout=30)
                assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
                bodies.append(response.content)
        assert bodies[0][4:8] == b"ftyp" and all(body == bodies[0] for body in bodies)
    # Exactly three workers: the --api-only node started none.
    with fleet["admin"].connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {fleet['schema']}.workers")).scalar() == 3
    # /metrics on either node shows the fleet: histograms from the store, worker states.
    metrics = httpx.get(api_a.base + "/metrics", timeout=10).text
    assert 'ltx_job_run_seconds_count{outcome="succeeded"}' in metrics
    assert 'ltx_job_step_seconds_count{resolution="<=256x256"}' in metrics
    assert 'ltx_workers{state="idle"}' in metrics and "ltx_store_notification_lag_seconds_count" in metrics


def test_a_worker_killed_mid_job_has_its_job_finished_by_another(fleet):
    api_a, api_b = fleet["a"], fleet["b"]
    (job_id,) = enqueue(api_b, f"fleet crash [[test-step-delay={SLOW_STEP * 2}]]")
    running = wait_for(lambda: row(fleet, job_id), lambda r: r["status"] == "processing" and r["progress"] > 0,
                       timeout=120)
    victim = running["worker_id"]
    with fleet["admin"].connect() as conn:
        pid = conn.execute(text(f"SELECT pid FROM {fleet['schema']}.workers WHERE id = :w"), {"w": victim}).scalar()
    os.kill(pid, signal.SIGKILL)
    done = wait_for(lambda: row(fleet, job_id), lambda r: r["status"] in ("succeeded", "failed"), timeout=300)
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["worker_id"] != victim
    # The recovery is logged with the job's generation id (JSON logs) by whichever node's janitor acted.
    recovered = [entry for read in (api_a.log, api_b.log) for entry in _step_lines(read(), job_id)
                 if "retried or failed" in entry["message"]]
    assert recovered
    assert httpx.get(status(api_a, job_id)["result_url"], timeout=30).content[4:8] == b"ftyp"


def _step_lines(text_log: str, generation_id: str) -> list[dict]:
    lines = []
    for line in text_log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("generation_id") == generation_id:
                lines.append(entry)
    return lines


def test_a_cancel_sent_to_b_stops_a_job_running_under_a_within_one_step(fleet):
    api_a, api_b = fleet["a"], fleet["b"]
    (job_id,) = enqueue(api_a, "fleet cancel [[test-log-steps]] [[test-step-delay=1.0]]")
    wait_for(lambda: row(fleet, job_id), lambda r: r["status"] == "processing" and r["stage"] == "stage1",
             timeout=120)
    cancelled_at = time.time()
    response = httpx.delete(f"{api_b.api}/ai/queue/{job_id}", headers=auth(), timeout=10)
    assert response.status_code == 200, response.text
    logs = (api_a.log, api_b.log, lambda: fleet["worker_log"].read_text(errors="replace"))

    def job_lines() -> list[dict]:
        return [entry for read in logs for entry in _step_lines(read(), job_id)]

    lines = wait_for(job_lines, lambda ls: any("cancelled" in e["message"] for e in ls), timeout=60)
    steps_after = [e for e in lines if e["message"].startswith("test step") and e["time"] > cancelled_at]
    assert len(steps_after) <= 1, steps_after  # at most the step already under way when the cancel landed
    # Every line the worker wrote while running the job carries its generation id (JSON logs).
    assert any(e["message"].startswith(f"job {job_id}: started") for e in lines)
    assert row(fleet, job_id)["status"] == "cancelled"
