"""A test engine factory: the real Engine, with faults injected from markers in the prompt.

Selected for live workers with `ltx-server worker|serve --engine faulty_engine:load` (or
`LTX_ENGINE=faulty_engine:load`, with tests/support on PYTHONPATH); production code has no test mode.

    [[test-oom]]             CUDA out-of-memory (torch.OutOfMemoryError) at the first stage-1 step
    [[test-oom=PHASE]]       the same at the first report of PHASE: prepare, stage1, upsample, stage2, decode
                             (decode: while the MP4 is being written); the real engine's handler names the phase
    [[test-enospc]]          OSError ENOSPC (disk full) during decode, while the MP4 is being written
    [[test-step-delay=S]]    sleep S seconds after every progress report (a slow job; a long S is a hung one)
    [[test-log-steps]]       log `test step <stage> <step>/<total>` at every progress report (tests count
                             the steps a job ran after some moment, e.g. a cancel)
    [[test-decode-delay=S]]  sleep S seconds after each decode report: the MP4 is being written meanwhile

At load: when the file named by `LTX_TEST_OOM_AT_LOAD` exists, it is removed and loading the model
fails with a CUDA out-of-memory error (inside `Engine.load`, so its real handler reports it); the
next load (the restarted worker) succeeds.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from pathlib import Path

from pipeline.engine import Engine, EngineSpec

DELAY = re.compile(r"\[\[test-step-delay=([0-9.]+)\]\]")
DECODE_DELAY = re.compile(r"\[\[test-decode-delay=([0-9.]+)\]\]")
OOM = re.compile(r"\[\[test-oom(?:=(\w+))?\]\]")
ENOSPC = "[[test-enospc]]"
LOG_STEPS = "[[test-log-steps]]"

log = logging.getLogger("ltx_server.faulty_engine")


def _out_of_memory(where: str) -> BaseException:
    import torch  # the worker process has it; the API process never imports this module

    return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected {where})")


class FaultyEngine:
    """Wraps an engine (anything with `info` and `generate`)."""

    def __init__(self, inner):
        self.inner = inner
        self.info = inner.info

    def __getattr__(self, name: str):
        # Everything else (a group's follow/close/needs_restart/rank, transformer_passes) is the real engine's.
        return getattr(self.inner, name)

    def generate(self, params, image: bytes, output: Path, progress=None, cancel=None, image_crf=None, **options):
        prompt = getattr(params, "prompt", "")
        match = DELAY.search(prompt)
        delay = float(match.group(1)) if match else 0.0
        decode = DECODE_DELAY.search(prompt)
        decode_delay = float(decode.group(1)) if decode else 0.0
        oom = OOM.search(prompt)
        oom_phase = (oom.group(1) or "stage1") if oom else None
        disk_full = ENOSPC in prompt
        log_steps = LOG_STEPS in prompt

        def on_progress(report) -> None:
            if log_steps:
                log.info("test step %s %d/%d", report.stage, report.step, report.total)
            if progress is not None:
                progress(report)
            if report.stage == oom_phase:
                raise _out_of_memory(report.stage)
            if disk_full and report.stage == "decode":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if delay:
                time.sleep(delay)
            if decode_delay and report.stage == "decode":
                time.sleep(decode_delay)

        return self.inner.generate(params, image, output, on_progress, cancel, image_crf, **options)


def _fail_load_once() -> None:
    marker = os.environ.get("LTX_TEST_OOM_AT_LOAD")
    if not marker or not Path(marker).exists():
        return
    Path(marker).unlink()
    from pipeline.generation import runtime

    real = runtime.VideoGenerator.from_directory

    def out_of_memory(*_args, **_kwargs):
        runtime.VideoGenerator.from_directory = real
        raise _out_of_memory("load")

    runtime.VideoGenerator.from_directory = out_of_memory


def load(spec: EngineSpec) -> FaultyEngine:
    """The `--engine` factory: the real engine for `spec`, wrapped."""
    _fail_load_once()
    return FaultyEngine(Engine.load(spec))
