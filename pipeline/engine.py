"""The one door into the pipeline: load an engine, generate a job, admit a job before queueing.

Everything the server and the offline tools need from the model goes through here (with
`pipeline.params` for the parameters and `pipeline.errors` for what can go wrong):

    engine = Engine.load(EngineSpec(weights="auto", data_dir=...))   # in a worker process
    result = engine.generate(params, image_bytes, out_path, progress, cancel)
    admit(params, image_size(image_bytes), capacity)                  # in the API process

This module imports no torch at import time: the API process uses `admit`, `image_size` and
`gpu_capacity_text`-free helpers only, and must stay light. `Engine.load` pulls in the runtime
(torch, diffusers) when a worker asks for a model; those imports are deferred on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipeline.errors import OutOfMemory, RequestTooLarge
from pipeline.params import GenerationParams


@dataclass(frozen=True)
class EngineSpec:
    """What to load: `weights` is auto | tiny | a directory; the rest choose device and GPU memory plan."""

    weights: str = "auto"
    data_dir: Path | None = None
    device: str | None = None
    plan: str | None = None
    compile_blocks: bool = False


@dataclass(frozen=True)
class EngineInfo:
    """What was loaded, for logs and for `/api/ai/models`."""

    path: Path
    device: str
    smoke_test: bool
    notice: str | None
    version_text: str
    plan_summary: str | None = None


@dataclass(frozen=True)
class Progress:
    """Where a job is: `stage` is prepare|stage1|upsample|stage2|decode; `step` of `total` in it."""

    stage: str
    step: int
    total: int
    fraction: float  # of the whole job, 0..1


@dataclass
class Result:
    """What a finished job produced."""

    path: Path
    seed: int
    width: int
    height: int
    num_frames: int
    fps: Fraction
    has_audio: bool
    transformer_passes: int
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Capacity:
    """The smallest GPU a job may land on: its memory plan and memory, for admission."""

    plan: str
    vram_bytes: int


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class Engine:
    """LTX-2.3 resident on one device, generating one job at a time."""

    def __init__(self, generator: Any, info: EngineInfo):
        self._generator = generator
        self.info = info

    @classmethod
    def load(cls, spec: EngineSpec) -> Engine:
        """Resolve the weights, verify them against their lock, and load them (once, for the process)."""
        # Deferred: torch and diffusers load only in processes that run the model.
        from pipeline.runtime import VideoGenerator, is_out_of_memory
        from pipeline.weights_location import resolve_weights

        choice = resolve_weights(spec.weights, spec.data_dir, spec.device)
        try:
            generator = VideoGenerator.from_directory(choice.path, device=choice.device, plan=spec.plan,
                                                      compile_blocks=spec.compile_blocks)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise OutOfMemory(f"Out of memory on {choice.device} while loading the model ({_first_line(exc)}); "
                              "choose a smaller memory plan (--plan).", "load") from None
        summary = generator.execution.summary() if generator.execution is not None else None
        info = EngineInfo(choice.path, choice.device, choice.smoke_test, choice.notice, choice.version_text, summary)
        return cls(generator, info)

    def generate(
        self,
        params: GenerationParams,
        image: bytes,
        output: Path,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        image_crf: int | None = None,
    ) -> Result:
        """Run one job and write its MP4 to `output` atomically.

        Raises `Cancelled`, `Refused` (too large, bad image), `OutOfMemory` (memory freed, the
        engine usable for the next job) or another exception for an unexpected failure.
        """
        from pipeline.runtime import oom_phase  # deferred with the rest of the runtime (torch)

        on_progress = None if progress is None else (lambda p: progress(Progress(p.stage, p.step, p.total, p.fraction)))
        options = {} if image_crf is None else {"image_crf": image_crf}
        try:
            done = self._generator.generate(params, image, output, on_progress=on_progress, should_cancel=cancel,
                                            **options)
        except Exception as exc:
            phase = oom_phase(exc, self._generator)
            if phase is None:
                raise
            message = _first_line(exc)
        else:
            return Result(done.path, done.seed, done.width, done.height, done.num_frames, done.fps, done.has_audio,
                          done.transformer_passes, done.timings)
        # Outside the handler: the traceback (and the job's tensors it holds) is gone before freeing.
        self._generator.release_memory()
        raise OutOfMemory(
            f"Out of memory on {self.info.device} during {phase} ({message}); "
            "try a lower resolution or fewer frames.",
            phase,
        )

    @property
    def transformer_passes(self) -> int:
        """Transformer forward passes since load (11 per job)."""
        return self._generator.transformer_passes


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a start image as the model will see it (EXIF orientation applied).

    Decodes fully, so a broken or hostile image is refused here (`StartImageError`).
    """
    from pipeline.start_image import decode_start_image

    image = decode_start_image(data)
    return image.width, image.height


def admit(params: GenerationParams, size: tuple[int, int], capacity: Capacity | None) -> None:
    """Refuse (`RequestTooLarge`) a job whose estimated peak does not fit `capacity`; no-op without a GPU."""
    if capacity is None:
        return
    from pipeline.geometry import plan_geometry
    from pipeline.memory_plan import Shape, check_request

    geometry = plan_geometry(params, *size)
    check_request(capacity.plan, Shape(geometry.width, geometry.height, params.num_frames, float(geometry.fps)),
                  capacity.vram_bytes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "Capacity", "Engine", "EngineInfo", "EngineSpec", "OutOfMemory", "Progress", "RequestTooLarge", "Result",
    "admit", "image_size",
]
