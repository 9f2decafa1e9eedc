"""A test engine factory: the real Engine, with faults injected from markers in the prompt.

Selected for live workers with `ltx-server worker|serve --engine faulty_engine:load` (or
`LTX_ENGINE=faulty_engine:load`, with tests/support on PYTHONPATH); production code has no test mode.

    [[test-oom]]             OutOfMemory at the first stage-1 step (phase "stage1"), memory untouched
    [[test-step-delay=S]]    sleep S seconds after every progress report (a slow job)
    [[test-log-steps]]       log `test step <stage> <step>/<total>` at every progress report (tests count
                             the steps a job ran after some moment, e.g. a cancel)
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from pipeline.engine import Engine, EngineSpec
from pipeline.errors import OutOfMemory

DELAY = re.compile(r"\[\[test-step-delay=([0-9.]+)\]\]")
OOM = "[[test-oom]]"
LOG_STEPS = "[[test-log-steps]]"

log = logging.getLogger("ltx_server.faulty_engine")


class _InjectedOOM(Exception):
    pass


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
        oom = OOM in prompt
        log_steps = LOG_STEPS in prompt

        def on_progress(report) -> None:
            if log_steps:
                log.info("test step %s %d/%d", report.stage, report.step, report.total)
            if progress is not None:
                progress(report)
            if oom and report.stage == "stage1":
                raise _InjectedOOM
            if delay:
                time.sleep(delay)

        try:
            return self.inner.generate(params, image, output, on_progress, cancel, image_crf, **options)
        except _InjectedOOM:
            Path(output).unlink(missing_ok=True)
            raise OutOfMemory(f"Out of memory on {self.info.device} during stage1 (CUDA out of memory, injected by "
                              "the faulty engine); try a lower resolution or fewer frames.", "stage1") from None


def load(spec: EngineSpec) -> FaultyEngine:
    """The `--engine` factory: the real engine for `spec`, wrapped."""
    return FaultyEngine(Engine.load(spec))
