"""CPU per status read inside the API process, without HTTP: the app's own share of the hot path.

Builds the real app (`create_app`, an embedded SQLite store, one API key), enqueues one job, then
calls `GET /api/ai/queue/{id}` straight through ASGI `--reads` times in one event loop and divides
the process CPU time by the count; the store's two read paths (`get`, through SQLAlchemy's pool,
and `get_nowait`, the event loop's quick read) are timed alone the same way. Run it on two commits
to compare them (RELIABILITY.md, "Load").

    python bench/status_read_cpu.py [--reads 3000] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

from fastapi.testclient import TestClient  # noqa: E402
from table import print_table  # noqa: E402

from server.api.main import create_app  # noqa: E402
from server.core.config import ServerConfig  # noqa: E402
from serverkit import KEY_A, tiny_body  # noqa: E402


def cpu_per_call(call: Callable[[], object], count: int) -> float:
    """Process CPU seconds per call, after a warm-up of a tenth of `count`."""
    for _ in range(count // 10):
        call()
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(ServerConfig(data_dir=Path(data_dir), api_keys=f"alice:{KEY_A}"))
        auth = {"authorization": f"Bearer {KEY_A}"}
        with TestClient(app, client=("127.0.0.1", 50000)) as client:
            reply = client.post("/api/ai/queue", json=tiny_body(), headers=auth)
            job_id = reply.json()["generations"][0]["generation_id"]
        path = f"/api/ai/queue/{job_id}"
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"authorization", auth["authorization"].encode())],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
        statuses: list[int] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        loop = asyncio.new_event_loop()
        through_app = cpu_per_call(lambda: loop.run_until_complete(app(dict(scope, state={}), receive, send)),
                                   args.reads)
        loop.close()
        if set(statuses) != {200}:
            raise SystemExit(f"the status read answered {sorted(set(statuses))}, not 200")
        store = app.state.services.store
        pooled = cpu_per_call(lambda: store.get(job_id, owner="alice"), args.reads)
        rows = [["GET /api/ai/queue/{id} through the app (ASGI)", f"{through_app * 1e6:.0f}"],
                ["JobStore.get (SQLAlchemy pool)", f"{pooled * 1e6:.0f}"]]
        if hasattr(store, "get_nowait"):  # older commits had no quick read
            quick = cpu_per_call(lambda: store.get_nowait(job_id, owner="alice"), args.reads)
            rows.append(["JobStore.get_nowait (the event loop's read)", f"{quick * 1e6:.0f}"])
        store.close()
    print_table(["what", "CPU us per call"], rows, args.markdown)


if __name__ == "__main__":
    main()
