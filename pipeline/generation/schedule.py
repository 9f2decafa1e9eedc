"""The distilled schedule and the per-token denoising arithmetic of image conditioning.

Pure tensor functions, no model: unit-tested on their own. The arithmetic is written in the
same float32 order as diffusers' Euler scheduler so that, where the semantics agree
(strength 1.0), the results agree bit for bit.
"""

from __future__ import annotations

import torch

# The reference DistilledPipeline's schedules (ltx-pipelines 1.0.0; diffusers' DISTILLED_SIGMA_VALUES
# and STAGE_2_DISTILLED_SIGMA_VALUES plus the terminal 0).
STAGE1_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)
TIMESTEP_SCALE = 1000.0  # the transformer takes sigma * 1000
PASSES_PER_JOB = (len(STAGE1_SIGMAS) - 1) + (len(STAGE2_SIGMAS) - 1)  # 11: one pass per step, no guidance


def sigma_tensor(sigmas: tuple[float, ...]) -> torch.Tensor:
    """Sigmas as float32, the precision the scheduler steps in."""
    return torch.tensor(sigmas, dtype=torch.float32)


def first_frame_mask(
    latent_frames: int, height: int, width: int, strength: float, batch: int = 1
) -> torch.Tensor:
    """Per-token denoise mask (B, N) in packed token order: 1 everywhere, 1 - strength on latent frame 0.

    Computed as 1 - (conditioning strength) in float32, the way diffusers' conditioning mask is.
    """
    conditioning = torch.zeros(batch, latent_frames, height * width, dtype=torch.float32)
    conditioning[:, 0] = strength
    return (1.0 - conditioning).flatten(1)


def noised_state(clean: torch.Tensor, noise: torch.Tensor, noise_scale: torch.Tensor | float) -> torch.Tensor:
    """Mix noise into a clean state: noise * scale + clean * (1 - scale), scale per token or global."""
    return noise_scale * noise + (1 - noise_scale) * clean


def conditioned_x0(
    sample: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor,
    token_mask: torch.Tensor,
    clean: torch.Tensor,
) -> torch.Tensor:
    """Clean estimate per the reference: x0 = x - v * (sigma * mask), blended back towards `clean`.

    Tokens with mask 1 are free; tokens with mask 1 - s are pulled towards the conditioning
    latent by s (at s = 1 they stay exactly `clean`).
    """
    mask = token_mask.unsqueeze(-1)
    x0 = sample - velocity * (sigma * mask)
    return x0 * mask + clean * (1 - mask)


def euler_step(sample: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One flow-matching Euler step from `sigma` to `sigma_next` with the global sigma."""
    velocity = (sample - x0) / sigma
    return sample + (sigma_next - sigma) * velocity


def pack_video(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F*H*W, C): the transformer's token order (patch size 1)."""
    return latents.permute(0, 2, 3, 4, 1).flatten(1, 3)


def unpack_video(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """(B, F*H*W, C) -> (B, C, F, H, W)."""
    batch, _, channels = tokens.shape
    return tokens.reshape(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)


def unpack_audio(tokens: torch.Tensor, mel_bins: int) -> torch.Tensor:
    """(B, L, C*M) -> (B, C, L, M)."""
    return tokens.unflatten(2, (-1, mel_bins)).transpose(1, 2)
