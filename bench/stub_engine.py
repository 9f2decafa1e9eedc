"""An engine stub for queue benchmarks (`--engine stub_engine:load`, with bench/ on PYTHONPATH).

It writes a few bytes and returns at once, so a benchmark measures the store, the workers' claim
loop and event delivery, not the model. Never used by the server itself or by tests of behaviour.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from pipeline.engine import EngineInfo, EngineSpec, Progress, Result


class StubEngine:
    """Anything with `info` and `generate` serves jobs (see `server.worker.worker`)."""

    info = EngineInfo(Path("stub"), "cpu", True, "queue benchmark stub engine", "stub")

    def generate(self, params, image: bytes, output: Path, progress=None, cancel=None, image_crf=None) -> Result:
        if progress is not None:
            progress(Progress("stage1", 1, 1, 0.5))
        Path(output).write_bytes(b"stub result")
        return Result(Path(output), params.seed or 0, 128, 128, 9, Fraction(24), False, 0)


def load(spec: EngineSpec) -> StubEngine:
    """The `--engine` factory."""
    return StubEngine()
