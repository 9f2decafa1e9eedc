"""A worker group: one logical worker whose every job runs on N ranks at once (one GPU each).

`ltx-server worker --gpus-per-job N` (what `serve --gpus-per-job N` starts per group of N GPUs)
runs `GroupLauncher`: it starts N rank processes (`worker ... --group-rank R --group-address
HOST:PORT`, rank 0 serving the rendezvous store) and watches them. The group is one worker in
the store: only rank 0 registers, claims jobs and records outcomes, under the launcher's
worker id (`GroupLeader`); the other ranks follow the leader's jobs inside the engine
(`run_follower`). The pipeline does the rest (`pipeline.engine.Engine` with a `RankGroup`):
rank 0 prepares and decodes, every rank denoises, collectives time out.

When any rank exits (killed, crashed, or its collectives failed: a dead peer, a timeout) the
launcher stops the others and exits non-zero, so the supervisor restarts the whole group and
reports the death: the job in flight is retried once, as for a single-GPU worker. A group
stopped by SIGTERM finishes its step, returns its job to the queue and exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.engine import Engine
from pipeline.errors import GroupFailed
from server.queue import Job
from server.worker.supervisor import _die_with_parent
from server.worker.worker import Worker

log = logging.getLogger("ltx_server.group")

EXIT_GROUP_BROKEN = 3  # a rank's exit status when its process group cannot run another job
STOP_GRACE_SECONDS = 20.0
FAILURE_GRACE_SECONDS = 5.0  # a broken group's remaining ranks: their job is already recovered elsewhere


class GroupBroken(BaseException):  # noqa: N818 - not an error of the job: the group must restart
    """Raised through the worker's job handling (which catches `Exception`) to leave the job claimed.

    The job keeps its lease and this worker's id; when the group's launcher exits, the
    supervisor reports the death and the janitor retries the job (or its lease runs out).
    """


class _LeaderEngine:
    """The leader's engine as the worker sees it: a collective failure becomes `GroupBroken`."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.info = engine.info

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._engine.generate(*args, **kwargs)
        except GroupFailed as exc:
            raise GroupBroken(str(exc)) from exc

    @property
    def transformer_passes(self) -> int:
        return self._engine.transformer_passes


class GroupLeader(Worker):
    """Rank 0: the store's worker for the whole group; stops when its group can run no more jobs."""

    def __init__(self, store: Any, engine_factory: Callable[[], Engine], data_dir: Path, **kwargs: Any):
        self.group_engine: Engine | None = None

        def load() -> Any:
            self.group_engine = engine_factory()
            return _LeaderEngine(self.group_engine)

        super().__init__(store, load, data_dir, **kwargs)

    def run_job(self, job: Job) -> None:
        """One job; `GroupBroken` when a rank failed mid-job (job left for retry) or the group needs a restart."""
        super().run_job(job)
        if self.group_engine is not None and self.group_engine.needs_restart:
            # e.g. out of memory on this rank mid-pass: the job is recorded as failed, but the other
            # ranks are stuck in a collective; the group must restart before the next job.
            raise GroupBroken(f"job {job.id} left the group's collectives out of step")


def run_follower(engine: Engine, stop: threading.Event) -> int:
    """A rank other than 0: follow the leader's jobs until it says stop; the exit status for the process."""
    try:
        engine.follow(stop.is_set)
    except GroupFailed as exc:
        log.error("rank %d: %s", engine.rank, exc)
        return EXIT_GROUP_BROKEN
    except Exception:
        log.exception("rank %d: the leader's store or a collective failed", engine.rank)
        return EXIT_GROUP_BROKEN
    engine.close()
    return 0


def free_port() -> int:
    """A free TCP port on loopback for the group's rendezvous (picked, then released for rank 0 to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GroupLauncher:
    """Start the N rank processes of one group, watch them, and end the group as one."""

    def __init__(self, rank_command: Callable[[int, str], list[str]], size: int, label: str = "group"):
        self.rank_command = rank_command
        self.size = size
        self.label = label
        self.stopping = threading.Event()
        self.processes: list[subprocess.Popen] = []

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: pass it to every rank (the leader returns its job to the queue) and wait."""
        def _stop(signum: int, _frame: Any) -> None:
            log.info("%s: signal %d, stopping its %d ranks", self.label, signum, self.size)
            self.stopping.set()
            for process in self.processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run(self) -> int:
        """Run the group until it stops (0) or a rank exits unexpectedly (its status, never 0)."""
        address = f"127.0.0.1:{free_port()}"
        for rank in range(self.size):
            self.processes.append(subprocess.Popen(self.rank_command(rank, address), preexec_fn=_die_with_parent))
        log.info("%s: %d ranks started (pids %s), rendezvous %s", self.label, self.size,
                 ", ".join(str(p.pid) for p in self.processes), address)
        while True:
            codes = [process.poll() for process in self.processes]
            if self.stopping.is_set():
                if all(code is not None for code in codes):
                    return 0 if all(code == 0 for code in codes) else _failure(codes)
            else:
                cause = _first_ended(codes)
                if cause is not None:
                    rank, code = cause
                    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                    log.error("%s: rank %d %s; stopping the group", self.label, rank, how)
                    self._end_all(FAILURE_GRACE_SECONDS if code != 0 else STOP_GRACE_SECONDS)
                    return _failure([code]) if code != 0 else 0
            time.sleep(0.1)

    def _end_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _first_ended(codes: list[int | None]) -> tuple[int, int] | None:
    """The rank whose end stops the group, with its status, or None while the group runs on.

    Any rank exiting non-zero, or the leader exiting at all, ends the group. A rank killed by a
    signal is named first: when the others have already died of its absence (a collective failed,
    possibly all within one poll), the log should name the cause, not the lowest rank.
    """
    ended = [(rank, code) for rank, code in enumerate(codes) if code is not None and (code != 0 or rank == 0)]
    if not ended:
        return None
    return min(ended, key=lambda item: (not item[1] < 0, item[0]))


def _failure(codes: list[int | None]) -> int:
    bad = [code for code in codes if code not in (None, 0)]
    if not bad:
        return 0
    return bad[0] if bad[0] > 0 else 128 - bad[0]
