"""Decode video latents to frames tile by tile, exactly as ltx-pipelines' distilled pipeline does.

ltx-core's `decode_video(latent, decoder, TilingConfig.default())` splits the latent into tiles
(512 px with 64 px overlap spatially, 64 frames with 24 overlap in time), decodes each tile on
its own, weights it with a separable trapezoidal mask and normalises the blended sum by the summed
weights. The pixels depend on that split, so this module re-implements it (the same intervals,
masks and arithmetic order) for the diffusers decoder: the MP4's frames then equal the
reference's for the same latents.

The pure parts (per-axis intervals, their pixel slices and 1-D masks, the separable weight) are
plain functions of the latent's shape, unit-tested without a model. `tiled_decode` runs the
tiles one temporal group at a time and yields each frame as soon as no later tile can touch it,
so memory holds one temporal group's buffers (its weighted sum and its weights) and the overlap
carried to the next, never the clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.geometry import REFERENCE_TILING, VAE_SPATIAL, VAE_TEMPORAL, DecodeTiling


@dataclass(frozen=True)
class Intervals:
    """One latent axis split into tiles: tile i covers [starts[i], ends[i]) and blends over its ramps."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    left_ramps: tuple[int, ...]
    right_ramps: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.starts)


def whole(length: int) -> Intervals:
    """The axis as one tile."""
    return Intervals((0,), (length,), (0,), (0,))


def split_symmetric(length: int, size: int, overlap: int) -> Intervals:
    """Tiles of `size` every `size - overlap`; the last one ends at the axis end (never longer than `size`)."""
    if length <= size:
        return whole(length)
    stride = size - overlap
    count = (length + size - 2 * overlap - 1) // stride  # ceil((length - overlap) / stride)
    starts = [i * stride for i in range(count)]
    ends = [start + size for start in starts]
    ends[-1] = length
    return Intervals(tuple(starts), tuple(ends), (0,) + (overlap,) * (count - 1), (overlap,) * (count - 1) + (0,))


def split_causal(length: int, size: int, overlap: int) -> Intervals:
    """The symmetric split with every tile but the first started one latent frame earlier.

    A tile's first latent frame decodes as a causal "first frame" (one pixel frame, not eight),
    so each later tile re-reads one more latent frame and blends over it: its left ramp grows by one.
    """
    if length <= size:
        return whole(length)
    split = split_symmetric(length, size, overlap)
    starts = split.starts[:1] + tuple(start - 1 for start in split.starts[1:])
    left = split.left_ramps[:1] + tuple(ramp + 1 for ramp in split.left_ramps[1:])
    return Intervals(starts, split.ends, left, split.right_ramps)


def spatial_tile_size(axis_length: int, long_side: int, tiling: DecodeTiling = REFERENCE_TILING) -> int:
    """Latent tile size along one spatial axis: the tile scaled by this axis over the long side.

    So a landscape frame gets proportionally shorter tiles in height (the reference's
    `_prepare_tiles`); never under overlap + 1 (nor 2) cells. Python's round (half to even), as there.
    """
    size = tiling.tile_pixels // VAE_SPATIAL
    overlap = tiling.overlap_pixels // VAE_SPATIAL
    return max(max(2, overlap + 1), round(size * axis_length / long_side))


def spatial_intervals(height: int, width: int, tiling: DecodeTiling = REFERENCE_TILING) -> tuple[Intervals, Intervals]:
    """(height, width) intervals of a latent frame of `height` x `width` cells."""
    long_side = max(height, width)
    overlap = tiling.overlap_pixels // VAE_SPATIAL
    return tuple(split_symmetric(n, spatial_tile_size(n, long_side, tiling), overlap) for n in (height, width))


def temporal_intervals(frames: int, tiling: DecodeTiling = REFERENCE_TILING) -> Intervals:
    """Latent-frame intervals of a clip of `frames` latent frames."""
    return split_causal(frames, tiling.tile_frames // VAE_TEMPORAL, tiling.overlap_frames // VAE_TEMPORAL)


def trapezoid(length: int, ramp_left: int, ramp_right: int, left_from_zero: bool = False) -> torch.Tensor:
    """A (length,) float32 mask: 1 in the middle, linear ramps of the given lengths at the ends.

    The ramps exclude their end points (a left ramp of 2 is 1/3, 2/3), except that with
    `left_from_zero` the left one starts at 0 (0, 1/3, 2/3 for 3): a later temporal tile's first
    frame is the causal re-decode of a frame the previous tile already has, and gets no weight.
    Values come from torch.linspace, as in ltx-core, so the weights agree bit for bit.
    """
    if length <= 0:
        raise ValueError("mask length must be positive")
    ramp_left, ramp_right = max(0, min(ramp_left, length)), max(0, min(ramp_right, length))
    mask = torch.ones(length)
    if ramp_left > 0:
        fade_in = torch.linspace(0.0, 1.0, ramp_left + (1 if left_from_zero else 2))[:-1]
        mask[:ramp_left] *= fade_in if left_from_zero else fade_in[1:]
    if ramp_right > 0:
        mask[-ramp_right:] *= torch.linspace(1.0, 0.0, ramp_right + 2)[1:-1]
    return mask.clamp_(0, 1)


def spatial_pixels(intervals: Intervals, scale: int = VAE_SPATIAL) -> list[tuple[slice, torch.Tensor]]:
    """Each spatial tile's pixel slice and 1-D mask (ramps scaled to pixels)."""
    out = []
    for start, end, left, right in zip(intervals.starts, intervals.ends, intervals.left_ramps,
                                       intervals.right_ramps, strict=True):
        out.append((slice(start * scale, end * scale), trapezoid((end - start) * scale, left * scale, right * scale)))
    return out


def temporal_pixels(intervals: Intervals, scale: int = VAE_TEMPORAL) -> list[tuple[slice, torch.Tensor]]:
    """Each temporal tile's pixel-frame slice and 1-D mask.

    Latent frames [s, e) decode to 1 + 8(e - 1 - s) frames; placed so that its first (causal)
    frame lands on pixel frame 8s, the last frame of latent frame s in the whole clip. A left ramp
    of r latent frames covers 1 + 8(r - 1) pixel frames and starts from 0; a right one 8r.
    """
    out = []
    for start, end, left, right in zip(intervals.starts, intervals.ends, intervals.left_ramps,
                                       intervals.right_ramps, strict=True):
        first, stop = start * scale, 1 + (end - 1) * scale
        left_frames = 0 if left == 0 else 1 + (left - 1) * scale
        out.append((slice(first, stop), trapezoid(stop - first, left_frames, right * scale, left_from_zero=True)))
    return out


def blend_weight(time: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """The separable (1, 1, T, H, W) weight of one tile: time x height x width, multiplied in that order."""
    return time.view(1, 1, -1, 1, 1) * height.view(1, 1, 1, -1, 1) * width.view(1, 1, 1, 1, -1)


@dataclass(frozen=True)
class Tile:
    """Which latent cells a tile reads, where its pixels go, and its 1-D masks (time, height, width)."""

    latent: tuple[slice, slice, slice]
    pixels: tuple[slice, slice, slice]
    masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def weight(self) -> torch.Tensor:
        return blend_weight(*self.masks)


def plan_tiles(
    frames: int, height: int, width: int, tiling: DecodeTiling | None = REFERENCE_TILING
) -> list[list[Tile]]:
    """The tiles of a (frames, height, width) latent, grouped by temporal slice, in decode order.

    Within a group, tiles run row by row (height outer, width inner), as the reference
    accumulates them; that order fixes the float sums where tiles overlap. `tiling` None: one tile.
    """
    if tiling is None:
        rows, cols, times = whole(height), whole(width), whole(frames)
    else:
        rows, cols = spatial_intervals(height, width, tiling)
        times = temporal_intervals(frames, tiling)
    row_px, col_px, time_px = spatial_pixels(rows), spatial_pixels(cols), temporal_pixels(times)
    groups = []
    for t, (t_px, t_mask) in enumerate(time_px):
        group = []
        for r, (r_px, r_mask) in enumerate(row_px):
            for c, (c_px, c_mask) in enumerate(col_px):
                latent = (slice(times.starts[t], times.ends[t]), slice(rows.starts[r], rows.ends[r]),
                          slice(cols.starts[c], cols.ends[c]))
                group.append(Tile(latent, (t_px, r_px, c_px), (t_mask, r_mask, c_mask)))
        groups.append(group)
    return groups


def decode_groups(latent_frames: int, height: int, width: int, tiling: DecodeTiling | None = REFERENCE_TILING) -> int:
    """How many temporal groups (and so yielded chunks) `tiled_decode` makes of such a latent."""
    return 1 if tiling is None else len(temporal_intervals(latent_frames, tiling))


def tiled_decode(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    tiling: DecodeTiling | None = REFERENCE_TILING,
) -> Iterator[torch.Tensor]:
    """Yield (1, 3, t, H, W) pixel chunks covering every frame of `latents` once, in order: one per temporal group.

    `decode` maps a (1, C, f, h, w) latent tile to (1, 3, 1 + 8(f-1), 32h, 32w); whatever
    normalisation it expects is the caller's business. Buffers are in the latents' dtype and device,
    as ltx-core's are. Per group: every tile x its weight and the weights themselves are summed into
    the group's buffers, the overlap kept from the previous group is added to their head, and the
    frames before the next group's start are divided by their weight (clamped at 1e-8) and yielded;
    the rest is kept for the next group. That is the reference's arithmetic, element for element.
    """
    batch, _, frames, height, width = latents.shape
    groups = plan_tiles(frames, height, width, tiling)
    out_h, out_w = height * VAE_SPATIAL, width * VAE_SPATIAL
    carried: tuple[torch.Tensor, torch.Tensor] | None = None  # (sum, weight) of frames the next group shares
    for index, group in enumerate(groups):
        span = group[0].pixels[0]
        shape = (batch, 3, span.stop - span.start, out_h, out_w)
        buffer = torch.zeros(shape, dtype=latents.dtype, device=latents.device)
        # One channel: the reference keeps three identical ones; broadcasting gives the same quotients.
        weights = torch.zeros((batch, 1, *shape[2:]), dtype=latents.dtype, device=latents.device)
        for tile in group:
            t, h, w = tile.latent
            decoded = decode(latents[:, :, t, h, w])
            length, rows, cols = (s.stop - s.start for s in tile.pixels)
            if tuple(decoded.shape[2:]) != (length, rows, cols):
                raise ValueError(f"decoder returned {tuple(decoded.shape)} for a tile of {(length, rows, cols)}")
            mask = tile.weight.to(device=buffer.device, dtype=buffer.dtype)
            region = (slice(None), slice(None), slice(None), tile.pixels[1], tile.pixels[2])
            buffer[region] += decoded * mask
            weights[region] += mask
            del decoded
        if carried is not None:
            # ltx-core adds the two groups' sums over the shared frames (its order: previous +
            # current; float addition commutes, so the bits are the same).
            shared = carried[0].shape[2]
            buffer[:, :, :shared] += carried[0]
            weights[:, :, :shared] += carried[1]
            carried = None  # freed before the yield's temporaries exist
        last = index == len(groups) - 1
        done = buffer.shape[2] if last else groups[index + 1][0].pixels[0].start - span.start
        finished = buffer[:, :, :done] / weights[:, :, :done].clamp(min=1e-8)
        carried = None if last else (buffer[:, :, done:].clone(), weights[:, :, done:].clone())
        del buffer, weights  # only the shared tail lives on while the consumer takes the frames
        yield finished
        del finished


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, truncating as ltx-core's `decode_video` does.

    ((x + 1) / 2).clamp(0, 1) * 255, then the cast to uint8 drops the fraction (it does not round):
    the reference's frames, bit for bit. diffusers' PIL path rounds instead, one level higher for
    about half the values.
    """
    frames = (((video[0] + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()
