"""A worker: one Engine resident in memory, claiming jobs from the store and running them.

The Engine is injected (`Worker(store, engine)` with an `Engine`, or a factory called by `load`),
so anything with the door's `generate`/`info` can serve jobs: the real model, the tiny model, or
a wrapper (see `ltx-server worker --engine MODULE:FACTORY`).

Per job, a reporter thread extends the job's lease and records progress (so the janitor can
tell a live worker from a dead one), and the cancel check the engine polls before every
denoising step reads the store at most every `CANCEL_CHECK_INTERVAL` seconds (on PostgreSQL: when
a cancel notification names the job, else every `NOTIFIED_CANCEL_CHECK_INTERVAL`). An idle worker
sleeps until a new-job notification (PostgreSQL) or its poll interval. Results are written by the
engine's atomic writer to a scratch path of the results backend (`server.results`) and then
published (the final directory, or an S3 upload visible only once complete), so a half-written
file is never served. Workers do not recover other workers' jobs: that is the janitor's
(`server.api.services.janitor`).
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.engine import Engine, Progress, gpu_memory
from pipeline.errors import Cancelled, OutOfMemory, Refused
from server.api.schemas import VideoRequest, conditioning_request
from server.core.debris import sweep_leftovers
from server.core.heap import freeze_startup_heap
from server.core.job_logs import job_context
from server.core.size_buckets import size_bucket
from server.queue import KEYFRAME_IMAGES, Job, JobStore
from server.queue.notify import CHANNEL_CANCEL, CHANNEL_JOBS
from server.results import LocalResults, ResultStore, write_directories

log = logging.getLogger("ltx_server.worker")

CANCEL_CHECK_INTERVAL = 0.2  # seconds between store reads in the per-step cancel check
IDLE_POLL_INTERVAL = 0.25
# With notifications (PostgreSQL) polling is only the fallback for a notification lost while the
# listener reconnects; it still bounds how late a wake-up can be.
NOTIFIED_IDLE_POLL_INTERVAL = 5.0
NOTIFIED_CANCEL_CHECK_INTERVAL = 2.0
DENOISING_STAGES = ("stage1", "stage2")  # the steps whose time the per-step metric measures
PROGRESS_EVENT_INTERVAL = 1.0  # at most one progress event per job per second
LIVENESS_INTERVAL = 2.0  # the API counts a worker as ready while its row is fresher than 5x this

EngineFactory = Callable[[], Engine]
STORE_RETRY_SECONDS = 300.0  # how long a worker waits for the store to come back before giving up a write
# The store is down or locked (as opposed to a bad statement): wait, do not fail the job.
STORE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


def new_worker_id() -> str:
    """host-pid-random: unique per process and readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class _JobState:
    job: Job
    progress: float = 0.0
    stage: str = "prepare"
    step: int = 0  # of `total`, within `stage` (the playground shows "stage 1 · step 5/8")
    total: int = 0
    lost: bool = False  # cancelled, or no longer ours
    check_now: bool = False  # a cancel notification named this job: read the store at the next step
    step_total: float = 0.0  # seconds spent in denoising steps, and how many
    steps: int = 0
    last_step_at: float | None = None
    timed_out: bool = False  # ran past --job-timeout
    started: float = 0.0  # time.monotonic() when the job began here


class Worker:
    """One engine serving jobs from the store until told to stop."""

    def __init__(
        self,
        store: JobStore,
        engine: Engine | EngineFactory,
        data_dir: Path,
        lease_seconds: float = 60.0,
        worker_id: str | None = None,
        device_hint: str | None = None,
        results: ResultStore | None = None,
        job_timeout: float = 0.0,
        progress_file: Path | None = None,
    ):
        self.store = store
        # An object with `generate` is an engine already; anything else is a factory for `load` to call.
        self.engine: Engine | None = engine if hasattr(engine, "generate") else None  # type: ignore[assignment]
        self._factory: EngineFactory | None = None if self.engine is not None else engine  # type: ignore[assignment]
        self.results = results or LocalResults(data_dir)
        self.write_dirs = write_directories(data_dir)  # swept on start: a killed predecessor's temporary files
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self.device_hint = device_hint
        self.job_timeout = job_timeout  # seconds; 0 = no limit
        # Touched on every progress report and idle poll: the supervisor's watchdog reads its mtime.
        self.progress_file = progress_file
        self.stop_event = threading.Event()
        self.wake = threading.Event()  # set by a new-job notification (and by stop)
        self._current: _JobState | None = None
        notified = store.notifies
        self.idle_poll = NOTIFIED_IDLE_POLL_INTERVAL if notified else IDLE_POLL_INTERVAL
        self.cancel_check_interval = NOTIFIED_CANCEL_CHECK_INTERVAL if notified else CANCEL_CHECK_INTERVAL
        if notified:
            store.listener.subscribe(CHANNEL_JOBS, lambda _subject: self.wake.set())
            store.listener.subscribe(CHANNEL_CANCEL, self._on_cancel_notice)

    def _on_cancel_notice(self, job_id: str) -> None:
        state = self._current
        if state is not None and (not job_id or job_id == state.job.id):
            state.check_now = True

    # ---- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Build the engine (when given a factory); announce readiness in the store."""
        if self.engine is None:
            self.store.register_worker(self.worker_id, self.device_hint or "?", os.getpid(), False, False, None)
            started = time.perf_counter()
            self.engine = self._factory()  # type: ignore[misc]
            info = self.engine.info
            if info.notice:
                log.warning("%s", "!" * 78)
                log.warning("%s", info.notice)
                log.warning("%s", "!" * 78)
            log.info("worker %s: model loaded from %s (%s) on %s in %.1f s", self.worker_id, info.path,
                     info.version_text, info.device, time.perf_counter() - started)
            if info.plan_summary:
                log.info("worker %s: %s", self.worker_id, info.plan_summary)
            freeze_startup_heap()  # the model's modules and tensors live as long as the process
        info = self.engine.info
        self.store.register_worker(self.worker_id, info.device, os.getpid(), True, info.smoke_test, info.notice)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop within one step, give the current job back to the queue, exit."""
        def _stop(signum: int, _frame: Any) -> None:
            log.info("worker %s: signal %d, stopping", self.worker_id, signum)
            self.stop_event.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def _keep_alive(self) -> None:
        """Refresh this worker's row every LIVENESS_INTERVAL, busy or idle (readiness reads it)."""
        device = self.engine.info.device if self.engine is not None else "cpu"
        while not self.stop_event.wait(LIVENESS_INTERVAL):
            try:
                state = self._current
                self.store.worker_seen(self.worker_id, job_id=state.job.id if state else None,
                                       gpu_memory=gpu_memory(device))
            except Exception:
                log.exception("liveness update failed; retrying")

    def run_forever(self) -> None:
        """Claim and run jobs until `stop_event` is set; deregister on the way out."""
        if self.engine is None:
            self.load()
        try:  # files a killed predecessor was writing: nobody's now
            for directory in self.write_dirs:
                for path in sweep_leftovers(directory, self.store.running_ids):
                    log.info("removed %s, left by an interrupted write", path.name)
        except Exception:
            log.exception("sweeping leftover files failed; the janitor retries")
        threading.Thread(target=self._keep_alive, name="liveness", daemon=True).start()
        self.store.listener.start()
        try:
            while not self.stop_event.is_set():
                self.wake.clear()  # before the claim: a job enqueued after it re-sets the flag
                self.show_progress()
                try:
                    job = self.store.claim_next(self.worker_id, self.lease_seconds)
                except Exception:  # the store is briefly unreachable: keep the model loaded and retry
                    log.exception("store unavailable; retrying in 2 s")
                    self.stop_event.wait(2.0)
                    continue
                if job is None:
                    self.wake.wait(self.idle_poll)
                    continue
                with job_context(job.id):
                    self.run_job(job)
        finally:
            self.store.remove_worker(self.worker_id)

    def _persist(self, call: Callable[..., Any], *args: Any) -> Any:
        """A store call that waits out an unavailable store (up to STORE_RETRY_SECONDS), so a job's
        outcome is recorded once the store is back rather than lost with a crashed worker."""
        deadline = time.monotonic() + STORE_RETRY_SECONDS
        while True:
            try:
                return call(*args)
            except STORE_ERRORS:
                if time.monotonic() > deadline:
                    raise
                log.warning("store unavailable; retrying %s in 1 s", getattr(call, "__name__", "the call"))
                time.sleep(1.0)

    def show_progress(self) -> None:
        """Tell the supervisor's watchdog this process is not hung (a file's mtime; no store round trip)."""
        if self.progress_file is None:
            return
        try:
            self.progress_file.touch()
        except OSError:
            log.warning("cannot touch the watchdog file %s", self.progress_file)

    # ---- one job -------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        """Generate one claimed job and record the outcome; never raises for a job's failure."""
        state = _JobState(job, started=time.monotonic())
        done = threading.Event()
        context = contextvars.copy_context()  # the reporter's log lines carry the generation id too
        reporter = threading.Thread(target=context.run, args=(self._report, state, done), daemon=True,
                                    name="reporter")
        reporter.start()
        self._current = state
        output = self.results.scratch_path(job.owner, job.id)
        log.info("job %s: started (attempt %d)", job.id, job.attempts)
        started = time.perf_counter()
        try:
            params, keyframe_images = self._request(job)
            image = self._persist(self.store.input_image, job.input_sha256)
            options = {"keyframe_images": keyframe_images} if keyframe_images else {}
            result = self.engine.generate(params, image, output, progress=self._on_progress(state),
                                          cancel=self._cancel_check(state), **options)
            info = {"seed": result.seed, "width": result.width, "height": result.height,
                    "num_frames": result.num_frames, "fps": _fps(result.fps), "has_audio": result.has_audio}
            if getattr(result, "adapters", None):  # extension: the LoRAs it used, with their files' sha256
                info["loras"] = result.adapters
            if getattr(result, "enhanced_prompt", None):  # extension: the prompt generated from
                info["enhanced_prompt"] = result.enhanced_prompt
            if getattr(result, "enhance_note", None):
                info["enhance_prompt_note"] = result.enhance_note
            # Cancelled while decoding: no upload. A store that is down now must not fail a finished job.
            if not self._persist(self.store.is_still_mine, job.id, self.worker_id):
                Path(result.path).unlink(missing_ok=True)
                raise Cancelled("the job was cancelled or taken over while finishing")
            key = self.results.publish(job.owner, job.id, Path(result.path))
            step = state.step_total / state.steps if state.steps else None
            if getattr(result, "notes", None):  # e.g. the prompt was longer than the text encoder reads
                info["notes"] = list(result.notes)
            if self._persist(lambda: self.store.complete(job.id, self.worker_id, key, info, step_seconds=step,
                                                         size_bucket=size_bucket(job.params.get("resolution")))):
                log.info("job %s: succeeded in %.1f s", job.id, time.perf_counter() - started)
            else:  # cancelled or taken away while finishing: the file is not anyone's result
                self.results.delete(key)
        except Cancelled:
            if state.timed_out:
                message = (f"The job was stopped after running {time.monotonic() - state.started:.0f} s, past this "
                           f"server's limit of {self.job_timeout:g} s per job (--job-timeout), during "
                           f"{state.stage}; try a lower resolution or fewer frames.")
                Path(output).unlink(missing_ok=True)
                if self._persist(self.store.fail, job.id, self.worker_id, message):
                    log.warning("job %s: %s", job.id, message)
            elif self.stop_event.is_set() and self._persist(self.store.requeue, job.id, self.worker_id):
                log.info("job %s: worker stopping, job returned to the queue", job.id)
            else:
                log.info("job %s: cancelled", job.id)
        except OutOfMemory as exc:  # the engine already freed the job's memory
            self._persist(self.store.fail, job.id, self.worker_id, str(exc))
            log.error("job %s: %s (phase %s)", job.id, exc, exc.phase)
        except Refused as exc:  # refused before any work: say why, plainly
            self._persist(self.store.fail, job.id, self.worker_id, str(exc))
            log.warning("job %s refused: %s", job.id, exc)
        except Exception as exc:  # a bad job must not stop the worker
            log.exception("job %s failed", job.id)
            self._persist(self.store.fail, job.id, self.worker_id, describe_failure(exc, free_bytes(output.parent)))
        finally:
            self._current = None
            done.set()
            reporter.join(timeout=5)

    def _request(self, job: Job) -> tuple[VideoRequest, list[bytes]]:
        """The job's request as the engine runs it (end_image folded in) and its keyframe images, in order."""
        params = dict(job.params)
        shas = params.pop(KEYFRAME_IMAGES, [])
        request = conditioning_request(VideoRequest.model_validate(params))
        return request, [self._persist(self.store.input_image, sha) for sha in shas]

    def _on_progress(self, state: _JobState) -> Callable[[Progress], None]:
        def on_progress(progress: Progress) -> None:
            now = time.perf_counter()
            # A denoising step is the time between two reports of the same denoising stage.
            if progress.stage in DENOISING_STAGES and progress.stage == state.stage and state.last_step_at:
                state.step_total += now - state.last_step_at
                state.steps += 1
            state.last_step_at = now
            state.progress, state.stage = progress.fraction, progress.stage
            state.step, state.total = progress.step, progress.total
            self.show_progress()

        return on_progress

    def _cancel_check(self, state: _JobState) -> Callable[[], bool]:
        last_check = [0.0]

        def should_cancel() -> bool:
            if self.stop_event.is_set() or state.lost or state.timed_out:
                return True
            now = time.monotonic()
            if self.job_timeout > 0 and now - state.started > self.job_timeout:
                state.timed_out = True
                return True
            if state.check_now or now - last_check[0] >= self.cancel_check_interval:
                state.check_now = False
                last_check[0] = now
                try:
                    if not self.store.is_still_mine(state.job.id, self.worker_id):
                        state.lost = True
                except STORE_ERRORS:  # the store is briefly down: keep generating (the lease covers it)
                    log.warning("job %s: cancel check could not reach the store", state.job.id)
            return state.lost

        return should_cancel

    def _report(self, state: _JobState, done: threading.Event) -> None:
        """Heartbeat thread: extend the lease, store progress, emit progress events (rate-limited)."""
        interval = max(0.2, min(2.0, self.lease_seconds / 6))
        last_event, last_sent = 0.0, -1.0
        while not done.wait(interval):
            try:
                now = time.monotonic()
                emit = state.progress != last_sent and now - last_event >= PROGRESS_EVENT_INTERVAL
                mine = self.store.heartbeat(state.job.id, self.worker_id, self.lease_seconds,
                                            progress=state.progress, stage=state.stage, emit_progress=emit,
                                            step=(state.step, state.total))
                if emit:
                    last_event, last_sent = now, state.progress
                if not mine:
                    state.lost = True
                    return
            except Exception:
                log.exception("heartbeat failed; retrying")


LOW_DISK_BYTES = 64 * 2**20  # an I/O failure with less than this free on the results disk is a full disk


def describe_failure(exc: BaseException, free_bytes: int | None = None) -> str:
    """The record's message for an unexpected failure; a full disk is said plainly.

    Not every writer reports ENOSPC (numpy's `tofile` raises "N requested and M written", ffmpeg
    exits with its own text), so an I/O error while the results disk is nearly full counts too.
    """
    text = str(exc)
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in text or (
        isinstance(exc, OSError) and free_bytes is not None and free_bytes < LOW_DISK_BYTES)
    if full:
        return ("The server ran out of disk space while writing the result (No space left on device); "
                "no file was kept. Retry once space has been freed.")
    return f"Generation failed: {type(exc).__name__}: {_first_line(exc)}"


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk holding `path` (None if it cannot be read)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _fps(value: Fraction | float) -> float:
    return round(float(value), 6)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
