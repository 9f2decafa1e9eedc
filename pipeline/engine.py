"""The one door into the pipeline: load an engine, generate a job, admit a job before queueing.

Everything the server and the offline tools need from the model goes through here (with
`pipeline.params` for the parameters and `pipeline.errors` for what can go wrong):

    engine = Engine.load(EngineSpec(weights="auto", data_dir=...))   # in a worker process
    result = engine.generate(params, image_bytes, out_path, progress, cancel)
    admit(params, image_size(image_bytes), capacity)                  # in the API process

and, for `serve` and the offline tools, without reaching into `pipeline.placement` or
`pipeline.generation`: `memory_plan(requested, vram_bytes)` (the plan a card gets, with the
planner's text), `gpu_plans(requested)` (the same for each visible GPU), `PLAN_NAMES`, and
`describe_weights(spec)` (what `Engine.load(spec)` would load, without loading it).

This module imports no torch at import time: the API process uses `admit`, `image_size` and
`memory_plan` (pure arithmetic and Pillow) and must stay light. `Engine.load`, `Engine.generate`,
`describe_weights` and `gpu_plans` pull in torch (and the runtime's diffusers) when called;
those imports are function-local on purpose, each marked `# deferred:` with its reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import LoraError, OutOfMemory, PlanError, RequestTooLarge
from pipeline.generation.image import decode_start_image
from pipeline.generation.outcome import CancelCheck, Progress, ProgressCallback, Result
from pipeline.geometry import plan_geometry, plan_size
from pipeline.params import GenerationParams
from pipeline.placement import plan as planner
from pipeline.placement.host import physical_memory_bytes
from pipeline.weights.lora import LoraFile, LoraFileError, find_lora, lora_catalog

PLAN_NAMES: tuple[str, ...] = planner.PLANS  # fastest first; `--plan auto` picks by GPU memory
GiB = planner.GiB


@dataclass(frozen=True)
class RankGroup:
    """This process's place in a group of `size` processes that run each job together (one GPU each).

    Rank 0 serves the rendezvous store at `address` (host:port) and takes the jobs; a collective
    that waits longer than `timeout_s` fails (a dead or stuck rank never hangs the group).
    """

    rank: int
    size: int
    address: str
    timeout_s: float = 300.0


@dataclass(frozen=True)
class EngineSpec:
    """What to load: `weights` is auto | tiny | a directory; the rest choose device and GPU memory plan."""

    weights: str = "auto"
    data_dir: Path | None = None
    device: str | None = None
    plan: str | None = None
    compile_blocks: bool = False
    group: RankGroup | None = None  # one job split over several GPUs (context parallelism); None: one device
    lora_dir: Path | None = None  # LoRA adapters jobs may name (`GenerationParams.loras`)
    enhance_max_tokens: int = 512  # bound on a prompt rewrite (`GenerationParams.enhance_prompt`)


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
class Capacity:
    """The smallest GPU a job may land on: its memory plan and memory, for admission."""

    plan: str
    vram_bytes: int
    ranks: int = 1  # GPUs each job is split over (--gpus-per-job)


@dataclass(frozen=True)
class GpuPlan:
    """One GPU's memory plan (index -1: a stated card, not a visible one): what `serve` logs, `weights plan` prints."""

    index: int
    vram_bytes: int  # the card's total memory
    plan: str
    summary: str  # the planner's text: the plan, its weights, estimates for typical jobs
    name: str = ""  # the device's name, for a visible GPU
    ranks: int = 1  # GPUs each job is split over

    @property
    def capacity(self) -> Capacity:
        """What the API admits jobs against when this is the smallest GPU."""
        return Capacity(self.plan, self.vram_bytes, self.ranks)




class Engine:
    """LTX-2.3 resident on one device, generating one job at a time."""

    def __init__(self, generator: Any, info: EngineInfo):
        self._generator = generator
        self.info = info

    @classmethod
    def load(cls, spec: EngineSpec) -> Engine:
        """Resolve the weights, verify them against their lock, and load them (once, for the process)."""
        # deferred: torch and diffusers load only in processes that run the model (the door stays light)
        from pipeline.generation.runtime import VideoGenerator, is_out_of_memory

        found = describe_weights(spec)
        if spec.group is not None:
            return cls._load_group(spec, found)
        try:
            generator = VideoGenerator.from_directory(found.path, device=found.device, plan=spec.plan,
                                                      compile_blocks=spec.compile_blocks, lora_dir=spec.lora_dir,
                                                      enhance_max_tokens=spec.enhance_max_tokens)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise OutOfMemory(f"Out of memory on {found.device} while loading the model ({_first_line(exc)}); "
                              "choose a smaller memory plan (--plan).", "load") from None
        summary = generator.execution.summary() if generator.execution is not None else None
        return cls(generator, dataclasses.replace(found, plan_summary=summary))

    @classmethod
    def _load_group(cls, spec: EngineSpec, found: EngineInfo) -> Engine:
        """Join the rank group and load this rank's share (see `pipeline.generation.group_runtime`)."""
        # deferred: torch.distributed and the runtime load only in processes that run the model
        from pipeline.generation.group_runtime import GroupVideoGenerator

        group = spec.group
        assert group is not None
        device = found.device if not found.device.startswith("cuda") else f"cuda:{group.rank}"
        generator = GroupVideoGenerator.load(found.path, device, group.rank, group.size, group.address,
                                             group.timeout_s, plan=spec.plan, compile_blocks=spec.compile_blocks)
        summary = generator.parallel.describe()
        if generator.execution is not None:
            summary = f"{generator.execution.summary()}\n{summary}"
        label = f"{device} (rank {group.rank} of {group.size})"
        return cls(generator, dataclasses.replace(found, device=label, plan_summary=summary))

    @property
    def rank(self) -> int:
        """This process's rank in its job group (0 without a group: it takes the jobs)."""
        return getattr(self._generator, "rank", 0)

    @property
    def needs_restart(self) -> bool:
        """A job group whose collectives failed mid-job: the process group must be restarted."""
        return bool(getattr(self._generator, "broken", False))

    def follow(self, stop: CancelCheck | None = None) -> None:
        """On a rank other than 0: run the leader's jobs until it stops (or `stop()` while idle).

        Raises `GroupFailed` when a collective fails (the leader died or timed out).
        """
        from pipeline.generation.group_runtime import raise_group_failure  # deferred: imports torch.distributed

        try:
            self._generator.follow(stop or (lambda: False))
        except Exception as exc:
            raise_group_failure(exc)
            raise

    def close(self) -> None:
        """Leave the job group (rank 0 tells the others to stop); a no-op for a single device."""
        close = getattr(self._generator, "close", None)
        if close is not None:
            close()

    def generate(
        self,
        params: GenerationParams,
        image: bytes,
        output: Path,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        image_crf: int | None = None,
        keyframe_images: Sequence[bytes] = (),
    ) -> Result:
        """Run one job and write its MP4 to `output` atomically.

        `keyframe_images` are the encoded images of `params.keyframes`, in order (each checked
        with `image_size` first, as the start image is).

        Raises `Cancelled`, `Refused` (too large, bad image), `OutOfMemory` (memory freed, the
        engine usable for the next job) or another exception for an unexpected failure.
        """
        from pipeline.generation.runtime import oom_phase  # deferred: the runtime imports torch

        options: dict[str, Any] = {} if image_crf is None else {"image_crf": image_crf}
        if keyframe_images:
            options["keyframe_images"] = list(keyframe_images)
        try:
            return self._generator.generate(params, image, output, on_progress=progress, should_cancel=cancel,
                                            **options)
        except Exception as exc:
            if self.needs_restart:  # a rank died or stopped answering: the group restarts, the job is retried
                from pipeline.generation.group_runtime import raise_group_failure  # deferred: as above

                raise_group_failure(exc)
            phase = oom_phase(exc, self._generator)
            if phase is None:
                raise
            message = _first_line(exc)
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

    Decodes fully, so a broken or hostile image is refused here (`StartImageError`). Pillow only.
    """
    image = decode_start_image(data)
    return image.width, image.height


def admit(params: GenerationParams, size: tuple[int, int], capacity: Capacity | None,
          lora_dir: Path | None = None) -> None:
    """Refuse a job that cannot run: a LoRA not in `lora_dir` (`LoraError`), or an estimated peak that
    does not fit `capacity` (`RequestTooLarge`; its LoRA matrices counted, bfloat16 on the GPU)."""
    files = check_loras(params, lora_dir)
    if capacity is None:
        return
    adapter_bytes = sum(file.device_bytes(2) for file in files)
    planner.check_request(capacity.plan, plan_geometry(params, *size), capacity.vram_bytes - adapter_bytes,
                          ranks=capacity.ranks)


def list_loras(lora_dir: Path | None) -> tuple[list[LoraFile], list[str]]:
    """The LoRA directory's usable adapters (name, size, sha256, rank, layout) and why any file was skipped.

    Headers and hashes only (sha256 cached per file for the process): no torch.
    """
    return lora_catalog(lora_dir)


def check_loras(params: GenerationParams, lora_dir: Path | None) -> list[LoraFile]:
    """The files of the LoRAs `params` names; `LoraError` for a name `lora_dir` does not hold (or no directory)."""
    try:
        return [find_lora(lora_dir, choice.name) for choice in params.loras]
    except LoraFileError as exc:
        raise LoraError(str(exc)) from None


def memory_plan(
    requested: str | None, vram_bytes: int, index: int = -1, host_ram_bytes: int | None = None, ranks: int = 1
) -> GpuPlan:
    """The plan `requested` (None / auto | resident | encoder-offload | fp8 | offload) gives a card of `vram_bytes`.

    `auto` is the fastest plan whose estimate for the design request fits (and whose weights fit
    `host_ram_bytes` of host RAM, when given). `ranks` > 1: each job is split over that many such
    cards (block offload is refused). Raises `PlanError` (a `ValueError`) for an unknown name, or a
    card or host too small for any plan. Pure arithmetic: no torch.
    """
    plan = planner.resolve_plan(requested, vram_bytes, host_ram_bytes, ranks)
    return GpuPlan(index, vram_bytes, plan, planner.summary(plan, vram_bytes, ranks=ranks), ranks=ranks)


def gpu_plans(requested: str | None = None, ranks: int = 1) -> list[GpuPlan]:
    """`memory_plan` for each visible CUDA GPU, with its index and name; [] without CUDA.

    Raises `PlanError` naming the GPU ("GPU 1: ...") for an unknown plan, a GPU too small for any,
    or a host without the RAM the plan keeps weights in (checked against this machine's memory).
    """
    import torch  # deferred: the door is imported by the API process and must not import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    host_ram = physical_memory_bytes()
    share = None if host_ram is None else host_ram // count  # one worker per GPU, each pins its own weights
    plans = []
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        try:
            plan = memory_plan(requested, int(props.total_memory), index, share, ranks)
        except PlanError as exc:
            raise PlanError(f"GPU {index}: {exc}") from None
        plans.append(dataclasses.replace(plan, name=props.name))
    return plans


def describe_weights(spec: EngineSpec) -> EngineInfo:
    """What `Engine.load(spec)` would load, without loading it: `--weights auto|tiny|PATH` resolved.

    `auto` picks the real weights when a GPU and the weights directory are both present, else the
    tiny model (built on first use, under a file lock) with a loud notice. Raises `WeightsError`
    as `Engine.load` does (no weights there, files of mixed releases). `plan_summary` is None.
    """
    # deferred: locating weights imports torch (is a GPU visible?) and the tiny model's builder
    from pipeline.weights.locate import resolve_weights

    choice = resolve_weights(spec.weights, spec.data_dir, spec.device)
    return EngineInfo(choice.path, choice.device, choice.smoke_test, choice.notice, choice.version_text)


def gpu_memory(device: str) -> tuple[int, int] | None:
    """(allocated, reserved) bytes of this process on a CUDA device; None on any other device.

    Read by a worker for the fleet's metrics; the API process never calls it (it would import torch).
    """
    if not str(device).startswith("cuda"):
        return None
    import torch  # deferred: only a worker on a GPU asks, and the door must not import torch at import time

    return int(torch.cuda.memory_allocated(device)), int(torch.cuda.memory_reserved(device))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def output_size(resolution: str, image_width: int, image_height: int) -> tuple[int, int]:
    """The (width, height) a job is generated at for `resolution` and its start image's upright size.

    `auto` keeps the image's aspect ratio; the web playground asks the API for this, so the size it
    shows before submitting cannot drift from the one the model uses.
    """
    return plan_size(resolution, image_width, image_height)


__all__ = [
    "PLAN_NAMES", "Capacity", "Engine", "EngineInfo", "EngineSpec", "GiB", "GpuPlan", "LoraError", "LoraFile",
    "OutOfMemory", "PlanError", "Progress", "RankGroup", "RequestTooLarge", "Result", "admit", "check_loras",
    "describe_weights", "gpu_plans", "image_size", "list_loras", "memory_plan", "output_size",
]
