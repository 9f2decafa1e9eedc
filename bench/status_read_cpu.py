"""CPU per status read and per list call inside the API process, without HTTP: the app's own share.

Builds the real app (`create_app`, an embedded SQLite store, one API key), enqueues `--listed` jobs,
then calls `GET /api/ai/queue/{id}` straight through ASGI `--reads` times in one event loop (and
`GET /api/ai/queue?status=all`, the load bench's list call, a fifth as often) and divides the
process CPU time by the count; the store's two read paths (`get`, through SQLAlchemy's pool, and
`get_nowait`, the event loop's quick read) are timed alone the same way. A call the app answers in
its thread pool counts that thread's CPU too (it is the same process). Run it on two commits to
compare them (RELIABILITY.md, "Load").

    python bench/status_read_cpu.py [--reads 3000] [--listed 8] [--markdown]
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


def asgi_get(app, path: str, query: bytes, authorization: str) -> Callable[[], int]:
    """A call of `GET path?query` straight through ASGI on one event loop; returns the status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"authorization", authorization.encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    loop = asyncio.new_event_loop()
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def call() -> int:
        loop.run_until_complete(app(dict(scope, state={}), receive, send))
        return statuses[-1]

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--listed", type=int, default=8, help="the caller's jobs, as the list call returns them")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(ServerConfig(data_dir=Path(data_dir), api_keys=f"alice:{KEY_A}", rate_limit=0,
                                      max_active_jobs=0))
        authorization = f"Bearer {KEY_A}"
        with TestClient(app, client=("127.0.0.1", 50000)) as client:
            ids = [client.post("/api/ai/queue", json=tiny_body(), headers={"authorization": authorization}).json()[
                "generations"][0]["generation_id"] for _ in range(args.listed)]
        job_id = ids[0]
        read = asgi_get(app, f"/api/ai/queue/{job_id}", b"", authorization)
        listed = asgi_get(app, "/api/ai/queue", b"status=all", authorization)
        if {read(), listed()} != {200}:
            raise SystemExit("the status read or the list did not answer 200")
        through_app = cpu_per_call(read, args.reads)
        list_call = cpu_per_call(listed, max(100, args.reads // 5))
        store = app.state.services.store
        pooled = cpu_per_call(lambda: store.get(job_id, owner="alice"), args.reads)
        rows = [["GET /api/ai/queue/{id} through the app (ASGI)", f"{through_app * 1e6:.0f}"],
                [f"GET /api/ai/queue?status=all ({args.listed} jobs) through the app (ASGI)", f"{list_call * 1e6:.0f}"],
                ["JobStore.get (SQLAlchemy pool)", f"{pooled * 1e6:.0f}"]]
        if hasattr(store, "get_nowait"):  # older commits had no quick read
            quick = cpu_per_call(lambda: store.get_nowait(job_id, owner="alice"), args.reads)
            rows.append(["JobStore.get_nowait (the event loop's read)", f"{quick * 1e6:.0f}"])
        store.close()
    print_table(["what", "CPU us per call"], rows, args.markdown)


if __name__ == "__main__":
    main()
