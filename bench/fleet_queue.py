"""The store under a fleet: claims per second and wake-up latencies, PostgreSQL (LISTEN/NOTIFY) vs
SQLite (polling), with 1, 3 and 8 workers, in one run.

For each (store, worker count) it starts a live `ltx-server serve` whose workers run the real
worker loop (claim, heartbeat, publish, complete) with an engine STUB (bench/stub_engine.py: it
writes a few bytes and returns), so the figures are the store's and the worker loop's, not the
model's. Then:
1. latency: an SSE client subscribes to `/api/events`; jobs are enqueued one at a time (spaced,
   so a worker is idle and waiting each time); enqueue -> worker start is read from the store's
   timestamps, worker finish -> the client's SSE event from the event's arrival time;
2. throughput: a batch of jobs is enqueued in one transaction; claims per second = jobs / (last
   start - first start).
PostgreSQL runs in a fresh schema of the machine's server (`LTX_TEST_PG_URL`), dropped afterwards.

    python bench/fleet_queue.py [--workers 1,3,8] [--jobs 30] [--batch 200] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from table import print_table

from server.api.schemas import VideoRequest
from server.core.auth import LOCAL_OWNER
from server.queue import JobStore, NewJob

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PG_URL = os.environ.get("LTX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")
# What `accept` stores for a request (the worker validates it again before running the engine).
PARAMS = VideoRequest.model_validate({"prompt": "stub", "input_image": "https://example.com/a.png",
                                      "resolution": "128x128", "num_frames": 9, "generate_audio": False,
                                      "seed": 1}).model_dump()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SSECollector:
    """Arrival time of each completion event on one stream."""

    def __init__(self, base: str):
        self.arrived: dict[str, float] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._run, args=(base,), daemon=True).start()

    def _run(self, base: str) -> None:
        try:
            with httpx.stream("GET", f"{base}/api/events", timeout=httpx.Timeout(10, read=None)) as stream:
                name = None
                for line in stream.iter_lines():
                    self.ready.set()
                    if line.startswith("event: "):
                        name = line[len("event: "):]
                    elif line.startswith("data: ") and name == "media_generation_completed":
                        self.arrived.setdefault(json.loads(line[len("data: "):])["generation_id"], time.time())
        except httpx.HTTPError:  # the server was stopped at the end of its case
            return


def run_case(store_url: str, workers: int, jobs: int, batch: int, data_dir: Path) -> dict[str, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LTX_")},
           "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen(
        [sys.executable, "-m", "server.entrypoints.cli", "serve", "--weights", "tiny", "--engine", "stub_engine:load",
         "--workers", str(workers), "--port", str(port), "--data-dir", str(data_dir), "--store", store_url,
         "--log-level", "warning"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = JobStore(store_url)
    try:
        deadline = time.time() + 120
        while len([w for w in store.live_workers(10) if w["ready"]]) < workers:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"{workers} workers did not start on {store_url}")
            time.sleep(0.2)
        sse = SSECollector(base)
        sse.ready.wait(30)
        time.sleep(1.0)  # every worker has reached its idle wait
        image = b"stub image"
        ids = []
        for _ in range(jobs):
            (job,) = store.enqueue([NewJob(LOCAL_OWNER, "m", PARAMS, "stub")], image)
            ids.append(job.id)
            time.sleep(0.15)  # the previous job is done: a worker is idle and waiting when the next arrives
        deadline = time.time() + 60
        while not set(ids) <= set(sse.arrived) and time.time() < deadline:
            time.sleep(0.05)
        rows = [store.get(i) for i in ids]
        failed = [r.error_message for r in rows if r.status != "succeeded"]
        if failed:
            raise SystemExit(f"stub jobs failed: {failed[0]}")
        pickup = [r.started_at - r.enqueued_at for r in rows]
        delivery = [sse.arrived[r.id] - r.completed_at for r in rows if r.id in sse.arrived]
        batch_jobs = store.enqueue([NewJob(LOCAL_OWNER, "m", PARAMS, "stub") for _ in range(batch)], image)
        deadline = time.time() + 300
        while time.time() < deadline:
            done = [store.get(j.id) for j in batch_jobs]
            if all(j.status == "succeeded" for j in done):
                break
            time.sleep(0.2)
        starts = [j.started_at for j in done]
        return {"pickup50": statistics.median(pickup), "pickup95": statistics.quantiles(pickup, n=20)[18],
                "sse50": statistics.median(delivery), "sse95": statistics.quantiles(delivery, n=20)[18],
                "claims": batch / max(1e-9, max(starts) - min(starts)), "lost": jobs - len(delivery)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        store.close()


def pg_schema() -> tuple[str, callable]:
    schema = f"ltx_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,3,8")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    table = []
    for backend in ("postgresql", "sqlite"):
        for count in (int(n) for n in args.workers.split(",")):
            with tempfile.TemporaryDirectory() as data_dir:
                if backend == "postgresql":
                    url, drop = pg_schema()
                else:
                    url, drop = f"sqlite:///{Path(data_dir) / 'jobs.sqlite3'}", lambda: None
                try:
                    figures = run_case(url, count, args.jobs, args.batch, Path(data_dir))
                finally:
                    drop()
            table.append([backend, str(count), f"{figures['claims']:.0f}",
                          f"{figures['pickup50'] * 1000:.1f}", f"{figures['pickup95'] * 1000:.1f}",
                          f"{figures['sse50'] * 1000:.1f}", f"{figures['sse95'] * 1000:.1f}"])
            print(" ".join(table[-1]), file=sys.stderr)
    print_table(["store", "workers", "claims/s", "enqueue->start p50 ms", "p95 ms", "finish->SSE p50 ms",
                 "p95 ms"], table, args.markdown)


if __name__ == "__main__":
    main()
