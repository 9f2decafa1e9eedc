"""Starts the worker processes of `ltx-server serve`, watches them and restarts any that die.

Each worker is a separate OS process (`ltx-server worker`), so a crash or an out-of-memory kill
in one cannot take the API down. When a worker dies, the job it was running is handed to the
store's recovery at once (retried once, then failed with a message saying so), rather than
waiting for its lease to run out; workers get SIGTERM if the supervisor itself dies
(PR_SET_PDEATHSIG), so an abrupt end of `serve` returns their jobs to the queue too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from server.store import JobStore

log = logging.getLogger("ltx_server.supervisor")

RESTART_BACKOFF_MAX = 30.0
STOP_GRACE_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Not Linux: no prctl, but the lease still recovers the jobs of an orphaned worker.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class WorkerSlot:
    """One worker position (e.g. one GPU) and the process currently filling it."""

    index: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    worker_id: str = ""
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = 0.25  # doubled before use: 0.5 s, 1 s, 2 s ... while it keeps dying young
    next_start: float = 0.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps `count` worker processes running against one store."""

    def __init__(
        self,
        store: JobStore,
        store_url: str,
        data_dir: Path,
        weights: str,
        count: int,
        lease_seconds: float,
        gpu_ids: list[int] | None = None,
        log_level: str = "info",
        worker_args: list[str] | None = None,
    ):
        self.store = store
        self.store_url = store_url
        self.data_dir = data_dir
        self.weights = weights
        self.lease_seconds = lease_seconds
        self.log_level = log_level
        self.worker_args = worker_args or []  # e.g. --plan / --compile, passed through unchanged
        self.slots = []
        for index in range(count):
            env = dict(os.environ)
            if gpu_ids:  # one GPU per worker
                env["CUDA_VISIBLE_DEVICES"] = str(gpu_ids[index % len(gpu_ids)])
            self.slots.append(WorkerSlot(index, env))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start every worker and the watcher thread."""
        for slot in self.slots:
            self._spawn(slot)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _command(self, slot: WorkerSlot) -> list[str]:
        return [
            sys.executable, "-m", "server.cli", "worker",
            "--store", self.store_url, "--data-dir", str(self.data_dir), "--weights", self.weights,
            "--lease-seconds", str(self.lease_seconds), "--worker-id", slot.worker_id,
            "--log-level", self.log_level, *self.worker_args,
        ]

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.worker_id = f"{socket.gethostname()}-w{slot.index}-{secrets.token_hex(3)}"
        slot.process = subprocess.Popen(self._command(slot), env=slot.env, preexec_fn=_die_with_parent)
        slot.started_at = time.monotonic()
        log.info("worker %d started: pid %d, id %s", slot.index, slot.process.pid, slot.worker_id)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for slot in self.slots:
                self._check(slot)

    def _check(self, slot: WorkerSlot) -> None:
        process = slot.process
        if process is None:
            if time.monotonic() >= slot.next_start and not self._stop.is_set():
                self._spawn(slot)
            return
        code = process.poll()
        if code is None or self._stop.is_set():
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        reason = f"its worker process died ({how})"
        for job_id in self.store.recover_abandoned(worker_id=slot.worker_id, reason=reason):
            log.warning("job %s: %s; retried or failed", job_id, reason)
        self.store.remove_worker(slot.worker_id)
        # Back off when a worker dies soon after starting (e.g. broken weights), reset otherwise.
        lived = time.monotonic() - slot.started_at
        slot.backoff = 0.5 if lived > 60 else min(RESTART_BACKOFF_MAX, slot.backoff * 2)
        slot.restarts += 1
        slot.history.append(code)
        slot.process = None
        slot.next_start = time.monotonic() + slot.backoff
        log.error("worker %d (pid %d) %s; restarting in %.1f s", slot.index, process.pid, how,
                  slot.next_start - time.monotonic())

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every worker (each returns its job to the queue), then SIGKILL stragglers."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        running = [slot.process for slot in self.slots if slot.process and slot.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
