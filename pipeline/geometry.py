"""Pure planning of a job's geometry: output size, frame counts, timing and audio length.

Everything here is arithmetic on the request and the start image's size, so it is unit-tested
on its own and shared by the runtime, the memory planner and the benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

# `auto` keeps the image's aspect ratio at about the pixel area of landscape_16_9.
from pipeline.params import RESOLUTION_PRESETS, SIZE_MULTIPLE, GenerationParams

# `auto` keeps the image's aspect ratio at about the pixel area of landscape_16_9.
AUTO_AREA = RESOLUTION_PRESETS["landscape_16_9"][0] * RESOLUTION_PRESETS["landscape_16_9"][1]
AUTO_MIN_SIDE, AUTO_MAX_SIDE = 256, 2048

VAE_SPATIAL, VAE_TEMPORAL = 32, 8
AUDIO_LATENTS_PER_SECOND = 25  # 16 kHz mel, hop 160, 4x temporal compression in the audio VAE
OUTPUT_SAMPLE_RATE = 48_000


def _round_to_multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def plan_size(resolution: str, image_width: int, image_height: int) -> tuple[int, int]:
    """Output (width, height) for a resolution choice and the start image's size."""
    if resolution in RESOLUTION_PRESETS:
        return RESOLUTION_PRESETS[resolution]
    if "x" in resolution:
        width, height = resolution.split("x")
        return int(width), int(height)
    aspect = image_width / image_height
    width = _round_to_multiple(math.sqrt(AUTO_AREA * aspect), SIZE_MULTIPLE)
    height = _round_to_multiple(math.sqrt(AUTO_AREA / aspect), SIZE_MULTIPLE)
    clamp = lambda side: min(AUTO_MAX_SIDE, max(AUTO_MIN_SIDE, side))  # noqa: E731
    return clamp(width), clamp(height)


def generated_frame_count(num_frames: int) -> int:
    """The smallest 8k+1 count >= num_frames: the VAE's causal first frame plus whole latent frames."""
    return ((num_frames - 1 + VAE_TEMPORAL - 1) // VAE_TEMPORAL) * VAE_TEMPORAL + 1


def fps_fraction(fps: float) -> Fraction:
    """An exact rational for a requested frame rate (23.976 -> 2997/125, 29.97002997 -> 30000/1001)."""
    return Fraction(repr(float(fps))).limit_denominator(10_000)


@dataclass(frozen=True)
class Geometry:
    """Everything size-related about one job, for both stages."""

    width: int
    height: int
    num_frames: int  # delivered
    generated_frames: int  # 8k+1 >= num_frames
    fps: Fraction

    @property
    def stage1_size(self) -> tuple[int, int]:
        return self.width // 2, self.height // 2

    @property
    def latent_frames(self) -> int:
        return (self.generated_frames - 1) // VAE_TEMPORAL + 1

    def latent_shape(self, stage: int) -> tuple[int, int, int]:
        """(frames, height, width) of the video latent at stage 1 or 2."""
        width, height = self.stage1_size if stage == 1 else (self.width, self.height)
        return self.latent_frames, height // VAE_SPATIAL, width // VAE_SPATIAL

    def video_tokens(self, stage: int) -> int:
        frames, height, width = self.latent_shape(stage)
        return frames * height * width

    @property
    def audio_latent_frames(self) -> int:
        return round(self.generated_frames / float(self.fps) * AUDIO_LATENTS_PER_SECOND)

    @property
    def duration(self) -> Fraction:
        """Delivered duration in seconds, exact."""
        return self.num_frames / self.fps

    def audio_samples(self, sample_rate: int = OUTPUT_SAMPLE_RATE) -> int:
        """Audio samples that cover exactly the delivered video's duration."""
        return round(self.duration * sample_rate)


def plan_geometry(request: GenerationParams, image_width: int, image_height: int) -> Geometry:
    """Plan a job's geometry from its request and the start image's size."""
    width, height = plan_size(request.resolution, image_width, image_height)
    return Geometry(
        width=width,
        height=height,
        num_frames=request.num_frames,
        generated_frames=generated_frame_count(request.num_frames),
        fps=fps_fraction(request.frames_per_second),
    )
