"""What a running job reports and what a finished one produced: plain data, no torch (the door re-exports them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path


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
    adapters: list[dict] = field(default_factory=list)  # LoRAs used: [{name, scale, sha256}]
    enhanced_prompt: str | None = None  # the prompt generated from, when enhancement was asked for
    enhance_note: str | None = None  # why the original prompt was kept, when enhancement failed
    notes: list[str] = field(default_factory=list)  # facts about the run a record should carry (a cut prompt)


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]
