"""Pure planning of a job's geometry: output size, frame counts, tokens, timing and audio length.

The single home of the frame / token / size arithmetic and of the VAE factors (32 px per latent
cell, 8 pixel frames per latent frame after the causal first one, 25 audio latents per second,
48 kHz output), and of the reference's decode tile sizes (`DecodeTiling`). Everything here is
arithmetic on the request and the start image's size, so it is unit-tested on its own and shared
by the runtime, the decode tiling, the weights registry, the memory planner
(`pipeline.placement.plan`) and the benchmarks. No torch: the API process admits jobs with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction

from pipeline.params import RESOLUTION_PRESETS, SIZE_MULTIPLE, GenerationParams

# `auto` keeps the image's aspect ratio at about the pixel area of landscape_16_9.
AUTO_AREA = RESOLUTION_PRESETS["landscape_16_9"][0] * RESOLUTION_PRESETS["landscape_16_9"][1]
AUTO_MIN_SIDE, AUTO_MAX_SIDE = 256, 2048

VAE_SPATIAL = 32  # pixels per latent cell along height and width
VAE_TEMPORAL = 8  # pixel frames per latent frame (after the causal first one)
AUDIO_LATENTS_PER_SECOND = 25  # 16 kHz mel, hop 160, 4x temporal compression in the audio VAE
OUTPUT_SAMPLE_RATE = 48_000


@dataclass(frozen=True)
class DecodeTiling:
    """Tile sizes in output pixels / frames, overlaps included (ltx-core's `TilingConfig`).

    Geometry, not torch: the decode (`pipeline.generation.decode`) tiles with it and the memory
    planner sizes a decode group from it.
    """

    tile_pixels: int = 512
    overlap_pixels: int = 64
    tile_frames: int = 64
    overlap_frames: int = 24

    def __post_init__(self) -> None:
        # The reference's own checks: whole latent cells, and overlaps smaller than tiles.
        if self.tile_pixels < 64 or self.tile_pixels % VAE_SPATIAL or self.overlap_pixels % VAE_SPATIAL:
            raise ValueError("spatial tile and overlap must be multiples of 32 px, the tile at least 64")
        if self.tile_frames < 16 or self.tile_frames % VAE_TEMPORAL or self.overlap_frames % VAE_TEMPORAL:
            raise ValueError("temporal tile and overlap must be multiples of 8 frames, the tile at least 16")
        if self.overlap_pixels >= self.tile_pixels or self.overlap_frames >= self.tile_frames:
            raise ValueError("an overlap must be smaller than its tile")


REFERENCE_TILING = DecodeTiling()  # TilingConfig.default(), what ltx-pipelines' distilled CLI decodes with


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


def latent_frame_count(generated_frames: int) -> int:
    """Latent frames of an 8k+1 pixel-frame clip: the causal first frame, then one per 8."""
    return (generated_frames - 1) // VAE_TEMPORAL + 1


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames the causal-first-frame VAE decodes from `latent_frames` latent frames."""
    return 1 + (latent_frames - 1) * VAE_TEMPORAL


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
    keyframes: int = 0  # keyframe images: one latent frame of extra tokens each, in both stages

    @property
    def stage1_size(self) -> tuple[int, int]:
        return self.width // 2, self.height // 2

    @property
    def latent_frames(self) -> int:
        return latent_frame_count(self.generated_frames)

    def latent_shape(self, stage: int) -> tuple[int, int, int]:
        """(frames, height, width) of the video latent at stage 1 or 2."""
        width, height = self.stage1_size if stage == 1 else (self.width, self.height)
        return self.latent_frames, height // VAE_SPATIAL, width // VAE_SPATIAL

    def video_tokens(self, stage: int = 2) -> int:
        """Video tokens of one transformer pass at stage 1 (half size) or 2 (full size), keyframe tokens included."""
        frames, height, width = self.latent_shape(stage)
        return (frames + self.keyframes) * height * width

    @property
    def audio_latent_frames(self) -> int:
        """Audio latent frames (= audio tokens of a transformer pass) covering the generated frames."""
        return round(self.generated_frames / float(self.fps) * AUDIO_LATENTS_PER_SECOND)

    @property
    def duration(self) -> Fraction:
        """Delivered duration in seconds, exact."""
        return self.num_frames / self.fps

    def audio_samples(self, sample_rate: int = OUTPUT_SAMPLE_RATE) -> int:
        """Audio samples that cover exactly the delivered video's duration."""
        return round(self.duration * sample_rate)

    def label(self) -> str:
        return f"{self.width}x{self.height}, {self.num_frames} frames"


def job_geometry(width: int, height: int, num_frames: int, fps: float | Fraction = 24.0) -> Geometry:
    """The geometry of a job of a known output size (what the memory planner reasons about)."""
    return Geometry(
        width=width,
        height=height,
        num_frames=num_frames,
        generated_frames=generated_frame_count(num_frames),
        fps=fps if isinstance(fps, Fraction) else fps_fraction(fps),
    )


def plan_geometry(request: GenerationParams, image_width: int, image_height: int) -> Geometry:
    """Plan a job's geometry from its request and the start image's size."""
    width, height = plan_size(request.resolution, image_width, image_height)
    geometry = job_geometry(width, height, request.num_frames, request.frames_per_second)
    return dataclasses.replace(geometry, keyframes=len(request.keyframes)) if request.keyframes else geometry
