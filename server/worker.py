"""A worker process: loads the model once, then claims jobs from the store and runs them.

Per job, a reporter thread extends the job's lease and records progress (so the supervisor or
another process can tell a live worker from a dead one), and the cancel check the runtime
polls before every denoising step reads the store at most every `CANCEL_CHECK_INTERVAL`
seconds. Results are written under `<data dir>/results/<owner digest>/<id>.mp4` by the
runtime's atomic writer, so a half-written file is never visible under its final name.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from server.config import test_mode
from server.store import Job, JobStore

log = logging.getLogger("ltx_server.worker")

CANCEL_CHECK_INTERVAL = 0.2  # seconds between store reads in the per-step cancel check
IDLE_POLL_INTERVAL = 0.25
PROGRESS_EVENT_INTERVAL = 1.0  # at most one progress event per job per second
LIVENESS_INTERVAL = 2.0  # the API counts a worker as ready while its row is fresher than 5x this
_TEST_DELAY = re.compile(r"\[\[test-step-delay=([0-9.]+)\]\]")
_TEST_OOM = "[[test-oom]]"


def new_worker_id() -> str:
    """host-pid-random: unique per process and readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def owner_directory(owner: str) -> str:
    """Result subdirectory of an owner: a digest, so owner names never shape paths."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16]


@dataclass
class _JobState:
    job: Job
    progress: float = 0.0
    stage: str = "prepare"
    lost: bool = False  # cancelled, or no longer ours


class Worker:
    """One model resident in memory, serving jobs from the store until told to stop."""

    def __init__(
        self,
        store: JobStore,
        data_dir: Path,
        weights: str = "auto",
        device: str | None = None,
        lease_seconds: float = 60.0,
        worker_id: str | None = None,
        plan: str = "auto",
        compile_blocks: bool = False,
    ):
        self.store = store
        self.data_dir = data_dir
        self.weights = weights
        self.device = device
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id or new_worker_id()
        self.plan = plan
        self.compile_blocks = compile_blocks
        self.stop_event = threading.Event()
        self.generator: Any = None
        self.choice: Any = None

    # ---- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Resolve and load the weights; announce readiness in the store."""
        from pipeline.runtime import VideoGenerator
        from pipeline.weights_location import resolve_weights

        self.store.register_worker(self.worker_id, self.device or "?", os.getpid(), False, False, None)
        self.choice = resolve_weights(self.weights, self.data_dir, self.device)
        if self.choice.notice:
            log.warning("%s", "!" * 78)
            log.warning("%s", self.choice.notice)
            log.warning("%s", "!" * 78)
        started = time.perf_counter()
        self.generator = VideoGenerator.from_directory(self.choice.path, device=self.choice.device, plan=self.plan,
                                                       compile_blocks=self.compile_blocks)
        log.info("worker %s: model loaded from %s (%s) on %s in %.1f s", self.worker_id, self.choice.path,
                 self.choice.version_text, self.choice.device, time.perf_counter() - started)
        if self.generator.execution is not None:
            log.info("worker %s: %s", self.worker_id, self.generator.execution.summary())
        self.store.register_worker(self.worker_id, self.choice.device, os.getpid(), True,
                                   self.choice.smoke_test, self.choice.notice)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop within one step, give the current job back to the queue, exit."""
        def _stop(signum: int, _frame: Any) -> None:
            log.info("worker %s: signal %d, stopping", self.worker_id, signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def _keep_alive(self) -> None:
        """Refresh this worker's row every LIVENESS_INTERVAL, busy or idle (readiness reads it)."""
        while not self.stop_event.wait(LIVENESS_INTERVAL):
            try:
                self.store.worker_seen(self.worker_id)
            except Exception:
                log.exception("liveness update failed; retrying")

    def run_forever(self) -> None:
        """Claim and run jobs until `stop_event` is set."""
        last_recover = 0.0
        threading.Thread(target=self._keep_alive, name="liveness", daemon=True).start()
        try:
            while not self.stop_event.is_set():
                now = time.time()
                try:
                    if now - last_recover > max(0.5, self.lease_seconds / 4):
                        for job_id in self.store.recover_abandoned(now):
                            log.warning("job %s: previous worker lost; retried or failed", job_id)
                        last_recover = now
                    job = self.store.claim_next(self.worker_id, self.lease_seconds)
                except Exception:  # the store is briefly unreachable: keep the model loaded and retry
                    log.exception("store unavailable; retrying in 2 s")
                    self.stop_event.wait(2.0)
                    continue
                if job is None:
                    self.stop_event.wait(IDLE_POLL_INTERVAL)
                    continue
                self.run_job(job)
        finally:
            self.store.remove_worker(self.worker_id)

    # ---- one job -------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        """Generate one claimed job and record the outcome; never raises for a job's failure."""
        import torch

        from pipeline.memory_plan import RequestTooLarge
        from pipeline.request import VideoRequest
        from pipeline.runtime import GenerationCancelled
        from pipeline.start_image import StartImageError

        state = _JobState(job)
        done = threading.Event()
        reporter = threading.Thread(target=self._report, args=(state, done), daemon=True, name="reporter")
        reporter.start()
        output = self.data_dir / "results" / owner_directory(job.owner) / f"{job.id}.mp4"
        output.parent.mkdir(parents=True, exist_ok=True)
        log.info("job %s: started (attempt %d)", job.id, job.attempts)
        started = time.perf_counter()
        try:
            request = VideoRequest.model_validate(job.params)
            image = self.store.input_image(job.input_sha256)
            on_progress, should_cancel = self._hooks(state, request.prompt)
            result = self.generator.generate(request, image, output, on_progress=on_progress,
                                             should_cancel=should_cancel)
            info = {"seed": result.seed, "width": result.width, "height": result.height,
                    "num_frames": result.num_frames, "fps": _fps(result.fps), "has_audio": result.has_audio}
            relative = str(Path(result.path).resolve().relative_to(self.data_dir.resolve()))
            if self.store.complete(job.id, self.worker_id, relative, info):
                log.info("job %s: succeeded in %.1f s", job.id, time.perf_counter() - started)
            else:  # cancelled or taken away while finishing: the file is not anyone's result
                Path(result.path).unlink(missing_ok=True)
        except GenerationCancelled:
            if self.stop_event.is_set() and self.store.requeue(job.id, self.worker_id):
                log.info("job %s: worker stopping, job returned to the queue", job.id)
            else:
                log.info("job %s: cancelled", job.id)
        except torch.OutOfMemoryError as exc:
            self._free_memory()
            message = (f"Out of memory on {self.choice.device if self.choice else 'the device'} while generating "
                       f"this job ({_first_line(exc)}); try a lower resolution or fewer frames.")
            self.store.fail(job.id, self.worker_id, message)
            log.error("job %s: %s", job.id, message)
        except (RequestTooLarge, StartImageError) as exc:  # refused before any work: say why, plainly
            self.store.fail(job.id, self.worker_id, str(exc))
            log.warning("job %s refused: %s", job.id, exc)
        except Exception as exc:  # a bad job must not stop the worker
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, self.worker_id, f"Generation failed: {type(exc).__name__}: {_first_line(exc)}")
        finally:
            done.set()
            reporter.join(timeout=5)

    def _hooks(self, state: _JobState, prompt: str) -> tuple[Any, Any]:
        """The progress callback and the cancel check for one job (plus test-mode fault injection)."""
        from pipeline.runtime import Progress

        delay, inject_oom = 0.0, False
        if test_mode():
            match = _TEST_DELAY.search(prompt)
            delay = float(match.group(1)) if match else 0.0
            inject_oom = _TEST_OOM in prompt
        last_check = [0.0]

        def on_progress(progress: Progress) -> None:
            state.progress, state.stage = progress.fraction, progress.stage
            if inject_oom and progress.stage == "stage1":
                import torch

                raise torch.OutOfMemoryError("CUDA out of memory (injected by LTX_TEST_MODE)")
            if delay:
                time.sleep(delay)

        def should_cancel() -> bool:
            if self.stop_event.is_set() or state.lost:
                return True
            now = time.monotonic()
            if now - last_check[0] >= CANCEL_CHECK_INTERVAL:
                last_check[0] = now
                if not self.store.is_still_mine(state.job.id, self.worker_id):
                    state.lost = True
            return state.lost

        return on_progress, should_cancel

    def _report(self, state: _JobState, done: threading.Event) -> None:
        """Heartbeat thread: extend the lease, store progress, emit progress events (rate-limited)."""
        interval = max(0.2, min(2.0, self.lease_seconds / 6))
        last_event, last_sent = 0.0, -1.0
        while not done.wait(interval):
            try:
                now = time.monotonic()
                emit = state.progress != last_sent and now - last_event >= PROGRESS_EVENT_INTERVAL
                mine = self.store.heartbeat(state.job.id, self.worker_id, self.lease_seconds,
                                            progress=state.progress, stage=state.stage, emit_progress=emit)
                if emit:
                    last_event, last_sent = now, state.progress
                if not mine:
                    state.lost = True
                    return
            except Exception:
                log.exception("heartbeat failed; retrying")

    def _free_memory(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _fps(value: Fraction | float) -> float:
    return round(float(value), 6)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
