"""Decode video latents to uint8 frames chunk by chunk, so the clip is never held whole twice.

Short clips decode in one call. Longer ones decode in temporal windows of latent frames that
overlap by `overlap` latent frames; the overlapping pixel frames are cross-faded linearly (the
decoder is not causal, so a window's edges see less context). Every finished frame is handed
on as soon as no later window can change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

VAE_TEMPORAL = 8


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, rounding as diffusers' PIL output does."""
    frames = (video[0] / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).contiguous().cpu().numpy()


def pixel_frames(latent_frames: int) -> int:
    """Pixel frames the causal-first-frame VAE decodes from `latent_frames` latent frames."""
    return 1 + (latent_frames - 1) * VAE_TEMPORAL


def decode_windows(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    window: int | None,
    overlap: int = 2,
) -> Iterator[torch.Tensor]:
    """Yield decoded pixel-frame chunks (1, 3, t, H, W) covering every frame of `latents` once, in order.

    `decode` maps a (1, C, f, h, w) latent window to (1, 3, 1 + 8(f-1), H, W). With `window` None
    or not smaller than the clip, the clip decodes in one call.
    """
    total = latents.shape[2]
    if window is None or total <= window + overlap:
        yield decode(latents)
        return
    if window < 1 or overlap < 1:
        raise ValueError("window and overlap must be at least one latent frame")
    emitted = 0  # global pixel frames already yielded
    carry: torch.Tensor | None = None  # tail of the previous window, to cross-fade
    for start in range(0, total, window):
        stop = min(total, start + window + overlap)
        decoded = decode(latents[:, :, start:stop])
        origin = 0 if start == 0 else VAE_TEMPORAL * start  # global index of decoded[:, :, 0]
        if carry is not None:
            blend = carry.shape[2]
            weight = torch.linspace(0, 1, blend + 2, dtype=decoded.dtype, device=decoded.device)[1:-1]
            weight = weight.view(1, 1, -1, 1, 1)
            head = decoded[:, :, emitted - origin : emitted - origin + blend]
            decoded[:, :, emitted - origin : emitted - origin + blend] = carry * (1 - weight) + head * weight
        last = stop >= total
        # Frames from the next window's first pixel frame on are shared with it: hold them back.
        keep_until = origin + decoded.shape[2] if last else VAE_TEMPORAL * (start + window)
        yield decoded[:, :, emitted - origin : keep_until - origin]
        carry = None if last else decoded[:, :, keep_until - origin :].clone()
        emitted = keep_until
        if last:
            return
