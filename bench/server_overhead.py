"""Server overhead: queue pickup, event delivery, and status reads under load, on a live server.

Starts `ltx-server serve --weights tiny` on a free loopback port with a fresh data dir, then:
1. runs small jobs one after another, each through the contract's SSE flow (subscribe, enqueue,
   wait for `media_generation_completed`), and reads the store's sub-second timestamps to split
   the time into enqueue -> worker start and worker finish -> the client's SSE event;
2. starts a long job and, while the worker is busy with it, hammers `GET /api/ai/queue/{id}` from
   a few client threads for a fixed time: latency p50/p99 and requests per second.
All traffic stays on 127.0.0.1 and every loop is bounded in count and time.

    python bench/server_overhead.py [--jobs 10] [--seconds 8] [--clients 4] [--markdown]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image
from table import print_table

from server.api.schemas import MODEL_ID
from server.queue import JobStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (40, 120, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def body(**extra) -> dict:
    return {"model": MODEL_ID, "prompt": "a blue square", "input_image": image_uri(), "resolution": "128x128",
            "num_frames": 9, "generate_audio": False, **extra}


def wait_ready(base: str, deadline: float) -> None:
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready in time")


def sse_job(client: httpx.Client, base: str) -> tuple[str, float, float]:
    """Enqueue after subscribing (as the contract's SSE client does); (id, enqueue return, event arrival)."""
    with client.stream("GET", f"{base}/api/events", timeout=60) as stream:
        response = client.post(f"{base}/api/ai/queue", json=body(), timeout=30)
        enqueued = time.time()
        job_id = response.json()["generations"][0]["generation_id"]
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif (line.startswith("data: ") and event == "media_generation_completed"
                  and json.loads(line[len("data: "):])["generation_id"] == job_id):
                return job_id, enqueued, time.time()
    raise RuntimeError("event stream ended before the job completed")


def hammer(base: str, job_id: str, seconds: float, clients: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.time() + seconds

    def loop() -> None:
        with httpx.Client() as client:
            mine = []
            while time.time() < stop:
                clock = time.perf_counter()
                client.get(f"{base}/api/ai/queue/{job_id}").raise_for_status()
                mine.append(time.perf_counter() - clock)
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        ltx = str(Path(sys.executable).parent / "ltx-server")
        server = subprocess.Popen(
            [ltx, "serve", "--weights", "tiny", "--host", "127.0.0.1", "--port", str(port), "--data-dir", data_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LTX_DATA_DIR": data_dir},
        )
        try:
            wait_ready(base, time.time() + 120)
            store = JobStore(f"sqlite:///{Path(data_dir) / 'jobs.sqlite3'}", create=False)
            pickup, delivery, total = [], [], []
            with httpx.Client() as client:
                sse_job(client, base)  # warm-up: first-job costs are not server overhead
                for _ in range(args.jobs):
                    job_id, enqueued, arrived = sse_job(client, base)
                    job = store.get(job_id)
                    pickup.append(job.started_at - job.enqueued_at)
                    delivery.append(arrived - job.completed_at)
                    total.append(arrived - enqueued)
                long_job = client.post(f"{base}/api/ai/queue", json=body(resolution="768x768", num_frames=121),
                                       timeout=30).json()["generations"][0]["generation_id"]
                while client.get(f"{base}/api/ai/queue/{long_job}").json()["status"] == "queued":
                    time.sleep(0.05)
                latencies, elapsed = hammer(base, long_job, args.seconds, args.clients)
                busy = client.get(f"{base}/api/ai/queue/{long_job}").json()["status"] == "processing"
                client.delete(f"{base}/api/ai/queue/{long_job}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    ms = lambda values, q: statistics.quantiles(values, n=100)[q - 1] * 1000  # noqa: E731
    rows = [
        ["enqueue -> worker starts the job", f"{statistics.median(pickup) * 1000:.0f}", f"{ms(pickup, 99):.0f}",
         f"{args.jobs} jobs"],
        ["worker finishes -> client's SSE event", f"{statistics.median(delivery) * 1000:.0f}",
         f"{ms(delivery, 99):.0f}", f"{args.jobs} jobs"],
        ["whole job seen by the client (128x128x9)", f"{statistics.median(total) * 1000:.0f}",
         f"{ms(total, 99):.0f}", f"{args.jobs} jobs"],
        [f"GET /api/ai/queue/{{id}}, worker {'busy' if busy else 'NOT busy'}",
         f"{statistics.median(latencies) * 1000:.1f}", f"{ms(latencies, 99):.1f}",
         f"{len(latencies) / elapsed:.0f} req/s, {args.clients} clients"],
    ]
    print_table(["what", "p50 ms", "p99 ms", "notes"], rows, args.markdown)


if __name__ == "__main__":
    main()
