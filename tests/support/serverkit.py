"""Helpers for the server tests: test images, a local image host, live `ltx-server serve`
processes driven over real HTTP, and polling."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from PIL import Image

from server.api.schemas import MODEL_ID

REPO = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = "key-alice-0123456789", "key-bob-9876543210"

# ---- images ---------------------------------------------------------------------------------


def png_bytes(width: int = 64, height: int = 48, color=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes | None = None, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data or png_bytes()).decode()}"


def tiny_body(prompt: str = "a red square drifting", **extra) -> dict:
    """The smallest request the model takes: 128x128, 9 frames (under a second on the tiny model)."""
    body = {"model": MODEL_ID, "prompt": prompt, "input_image": data_uri(), "resolution": "128x128",
            "num_frames": 9, "generate_audio": False}
    body.update(extra)
    return body


# ---- a local image host ----------------------------------------------------------------------


def bomb_png() -> bytes:
    # A 10000x10000 single-colour PNG compresses to a few hundred KiB but is 100 megapixels.
    buffer = io.BytesIO()
    Image.new("L", (10000, 10000), 0).save(buffer, "PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


class ImageHost:
    """A local HTTP server with one route per input-image case."""

    def __init__(self):
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.slow_paths: set[str] = set()
        self.endless_paths: dict[str, float] = {}  # path -> seconds between 64 KiB chunks, sent forever
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                if path in host.endless_paths:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()  # no length: the body never ends
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        for _ in range(100_000):
                            self.wfile.write(b"\x89PNG" + b"\0" * (2**16 - 4))
                            time.sleep(host.endless_paths[path])
                    return
                if path in host.slow_paths:
                    time.sleep(3)
                status, headers, body = host.routes.get(path, (404, {}, b"not found"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
        self.routes[path] = (status, {"Content-Type": "image/png", **(headers or {})}, body)
        return self.base + path

    def redirect(self, path: str, location: str):
        self.routes[path] = (302, {"Location": location}, b"")
        return self.base + path

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- live servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lock_exclusively(path: Path) -> Callable[[], None]:
    """Make a SQLite store a file no reader may open (exclusive locking mode, a write in progress);
    returns the call that releases it (from any thread)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE jobs SET progress = 0.5")

    def release() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    return release


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot ('' once it is gone): with the pid, its identity."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every live process below `pid` (children, theirs, ...), as (pid, start time), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append((child, _start_time(child)))
            todo.append(child)
    return found


@dataclass
class LiveServer:
    """An `ltx-server serve --weights tiny` process on a free port with its own data dir."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return self.base + "/api"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def start(self, wait_ready: bool = True, timeout: float = 90) -> LiveServer:
        self.log_path = self.data_dir / f"serve-{int(time.time() * 1000)}.log"
        inherited = {name: value for name, value in os.environ.items() if not name.startswith("LTX_")}
        # The workers run the real tiny engine wrapped by tests/support/faulty_engine.py (prompt markers).
        support = str(REPO / "tests" / "support")
        pythonpath = os.pathsep.join(p for p in (support, inherited.get("PYTHONPATH", "")) if p)
        env = {**inherited, "LTX_ENGINE": "faulty_engine:load", "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
               **self.env}
        command = [sys.executable, "-m", "server.entrypoints.cli", "serve", "--weights", "tiny", "--data-dir",
                   str(self.data_dir), "--port", str(self.port), *self.args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90, path: str = "/readyz") -> None:
        """Until `path` answers 200: /readyz (a worker has its model) or /healthz (the API is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, group: bool = False, timeout: float = 30) -> int:
        """Signal `serve` (or, with `group`, `serve` and every process under it at once) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        family = self.family()  # before `serve` ends: its orphans are no longer found under it
        if group:
            self.kill(family, sig)
        else:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(family, signal.SIGKILL)
            return self.process.wait()

    def cleanup(self) -> None:
        """Stop the server and anything left of it (workers, their ffmpeg)."""
        family = self.family()
        self.stop()
        self.kill(family, signal.SIGKILL)

    def family(self) -> list[tuple[int, str]]:
        """`serve` and every live process under it, as (pid, start time): the workers run in sessions of
        their own (the supervisor's `start_new_session`), out of reach of a signal to `serve`'s group."""
        if self.process is None or self.process.poll() is not None:
            return []
        return [(self.process.pid, _start_time(self.process.pid)), *descendants(self.process.pid)]

    @staticmethod
    def kill(family: list[tuple[int, str]], sig: int) -> None:
        """Signal each process of a `family()` that is still the same process (pids are reused)."""
        for pid, started in family:
            if started and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def db(self, query: str, *params) -> list[tuple]:
        """Read the server's SQLite store directly (worker pids, attempts)."""
        with sqlite3.connect(self.db_path, timeout=10) as conn:
            return conn.execute(query, params).fetchall()

    def worker_pid(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.db("SELECT pid FROM workers WHERE ready = 1")
            if rows:
                return rows[0][0]
            time.sleep(0.2)
        raise AssertionError("no ready worker")


# ---- polling --------------------------------------------------------------------------------


def wait_for(fetch, predicate, timeout: float = 60, interval: float = 0.25):
    """Poll `fetch()` until `predicate(value)`; returns the value or fails with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if predicate(value):
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s; last value: {value!r}")
