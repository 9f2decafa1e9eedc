"""Starts the worker processes of `ltx-server serve`, watches them and restarts any that die.

Each worker is a separate OS process (`ltx-server worker`), so a crash or an out-of-memory kill
in one cannot take the API down. When a worker dies, the supervisor reports it through
`on_exit(worker_id, reason)` (`serve` wires that to the janitor, which recovers the job at once:
retried once, then failed with a message saying so) rather than waiting for its lease to run out;
workers get SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG), so an abrupt end of
`serve` returns their jobs to the queue too. The supervisor itself never touches the store.

The watchdog: each worker touches a file (`--progress-file`) on every progress report and idle
poll; a worker whose file has not changed for `watchdog_seconds` (hung in a kernel, deadlocked:
its lease heartbeat runs on another thread, so the lease alone would never expire) is killed, and
reported like any dead worker (its job is retried once, then failed saying why). The clock starts
at the worker's first touch, after its model has loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ltx_server.supervisor")

RESTART_BACKOFF_MAX = 30.0
STOP_GRACE_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Not Linux: no prctl, but the lease still recovers the jobs of an orphaned worker.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _own_autogroup(nice: int) -> None:  # runs in the child between fork and exec, after its `setsid`
    # Where the kernel groups tasks by session (autogroup: processes in the root cgroup, as under a
    # login shell) it shares the CPU between sessions first and by nice only within each: a worker
    # computing in the API's session made that session heavy, and the API's thread waited behind
    # every other session's wake-ups. In a session of its own, niced as a whole, the worker yields
    # to the API across groups too (`bench/load.py`: the event loop's wait for a core fell from
    # 122-159 to 58-96 ms per second). Under systemd or in a container the process sits in a cgroup,
    # autogroups do not apply, and the threads' nice below does the same job.
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))


def _child_setup(nice: int, cpus: set[int] | None = None) -> Callable[[], None]:
    """What a worker runs between fork and exec: die with the supervisor, lower its CPU priority by
    `nice` (its threads' and its session's: `Supervisor` starts it in a session of its own), and keep
    to `cpus` (`--api-cpus`: the CPUs the API does not use). The API shares the host's cores with the
    workers; a worker's CPU work (the launch loop, a CPU model, muxing) is throughput work, an HTTP
    answer is latency work, so the kernel should run the API first whenever both want a core (the
    ranks of a group inherit all three)."""

    def setup() -> None:
        _die_with_parent()
        if nice > 0:
            with contextlib.suppress(OSError):
                os.nice(nice)
            _own_autogroup(nice)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


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
    hung: str = ""  # set when the watchdog killed the process: the reason reported for it


class Supervisor:
    """Keeps `count` processes of `command` running (each gets `--worker-id <id>` appended)."""

    def __init__(
        self,
        command: list[str],
        count: int,
        gpu_ids: list[int] | None = None,
        on_exit: Callable[[str, str], object] | None = None,
        gpus_per_worker: int = 1,
        watchdog_seconds: float = 0.0,
        nice: int = 0,
        cpus: set[int] | None = None,
    ):
        self.command = list(command)
        self._child_setup = _child_setup(nice, cpus)
        self.on_exit = on_exit
        self.watchdog_seconds = watchdog_seconds
        self._progress_dir = Path(tempfile.mkdtemp(prefix="ltx-watchdog-")) if watchdog_seconds > 0 else None
        self.slots = []
        for index in range(count):
            env = dict(os.environ)
            if gpu_ids and gpus_per_worker > 1:  # a worker group: N GPUs, one job split over them
                first = (index * gpus_per_worker) % len(gpu_ids)
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids[first:first + gpus_per_worker])
            elif gpu_ids:  # one GPU per worker
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

    def progress_file(self, slot: WorkerSlot) -> Path | None:
        return self._progress_dir / f"w{slot.index}" if self._progress_dir else None

    def _command(self, slot: WorkerSlot) -> list[str]:
        command = [*self.command, "--worker-id", slot.worker_id]
        if self._progress_dir is not None:
            command += ["--progress-file", str(self.progress_file(slot))]
        return command

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.worker_id = f"{socket.gethostname()}-w{slot.index}-{secrets.token_hex(3)}"
        slot.hung = ""
        if self._progress_dir is not None:
            self.progress_file(slot).unlink(missing_ok=True)  # the clock starts at the new worker's first touch
        # A session of its own: its own scheduling group (`_own_autogroup`), and a Ctrl-C at the terminal
        # reaches `serve` alone, which stops the workers in order (`stop`).
        slot.process = subprocess.Popen(self._command(slot), env=slot.env, preexec_fn=self._child_setup,
                                        start_new_session=True)
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
        if code is None and not self._stop.is_set():
            self._watch_progress(slot, process)
            return
        if code is None or self._stop.is_set():
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        reason = slot.hung or f"its worker process died ({how})"
        if self.on_exit is not None:
            try:
                self.on_exit(slot.worker_id, reason)
            except Exception:  # the store may be briefly unreachable; the lease still recovers the job
                log.exception("reporting the exit of worker %s failed", slot.worker_id)
        # Back off when a worker dies soon after starting (e.g. broken weights), reset otherwise.
        lived = time.monotonic() - slot.started_at
        slot.backoff = 0.5 if lived > 60 else min(RESTART_BACKOFF_MAX, slot.backoff * 2)
        slot.restarts += 1
        slot.history.append(code)
        slot.process = None
        slot.next_start = time.monotonic() + slot.backoff
        log.error("worker %d (pid %d) %s; restarting in %.1f s", slot.index, process.pid, how,
                  slot.next_start - time.monotonic())

    def _watch_progress(self, slot: WorkerSlot, process: subprocess.Popen) -> None:
        """Kill a worker whose progress file is older than `watchdog_seconds`."""
        path = self.progress_file(slot)
        if path is None or slot.hung:
            return
        try:
            silent = time.time() - path.stat().st_mtime
        except FileNotFoundError:  # still loading its model
            return
        if silent > self.watchdog_seconds:
            slot.hung = (f"its worker made no progress for {silent:.0f} s (limit {self.watchdog_seconds:g} s, "
                         "--watchdog-seconds) and was killed by the watchdog")
            log.error("worker %d (pid %d): no progress for %.0f s; killing it", slot.index, process.pid, silent)
            process.kill()

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
        if self._progress_dir is not None:
            shutil.rmtree(self._progress_dir, ignore_errors=True)
