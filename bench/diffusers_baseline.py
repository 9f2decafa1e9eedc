"""The same distilled two-stage job through bare diffusers 0.42.1 calls, for parity and overhead checks.

Stage 1 and stage 2 run through `LTX2ConditionPipeline` (the diffusers pipeline with the
reference's first-frame conditioning strength and stage-2 re-encoding of the image), the x2
step through `LTX2LatentUpsamplePipeline`, on the very modules our runtime has loaded. With
every guidance switched off (the 0.42.1 defaults are LTX-2.5's: diffusers issue 14649) it is
one transformer pass per step, as ours.

Known difference: for 0 < image_strength < 1 diffusers turns the velocity into a clean estimate
with the global sigma, the reference (and our runtime) with each token's own sigma * (1 - s);
at strength 1.0 (and 0.0) the two agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2 import LTX2ConditionPipeline, LTX2LatentUpsamplePipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
from PIL import Image

from pipeline.geometry import Geometry
from pipeline.weights.loader import Components

GUIDANCE_OFF = {
    "guidance_scale": 1.0,
    "audio_guidance_scale": 1.0,
    "stg_scale": 0.0,
    "audio_stg_scale": 0.0,
    "modality_scale": 1.0,
    "audio_modality_scale": 1.0,
    "guidance_rescale": 0.0,
    "audio_guidance_rescale": 0.0,
}


@dataclass
class BaselineOutput:
    video: torch.Tensor  # (1, C, F, h, w) de-normalized, as diffusers returns latents
    audio: torch.Tensor  # (1, C, L, M) de-normalized


def build_pipelines(c: Components) -> tuple[LTX2ConditionPipeline, LTX2LatentUpsamplePipeline]:
    """Wrap already-loaded modules in diffusers pipelines (no copy, no reload)."""
    # A distilled checkpoint needs plain Euler on the given sigmas: no dynamic shifting or terminal shift.
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False, shift_terminal=None)
    condition = LTX2ConditionPipeline(
        scheduler=scheduler, vae=c.vae, audio_vae=c.audio_vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer,
        connectors=c.connectors, transformer=c.transformer, vocoder=c.vocoder,
    )
    condition.set_progress_bar_config(disable=True)
    upsample = LTX2LatentUpsamplePipeline(vae=c.vae, latent_upsampler=c.latent_upsampler)
    upsample.set_progress_bar_config(disable=True)
    return condition, upsample


def run_two_stages(
    pipelines: tuple[LTX2ConditionPipeline, LTX2LatentUpsamplePipeline],
    prompt: str,
    image: Image.Image,
    geometry: Geometry,
    strength: float,
    seed: int,
    guidance: dict | None = None,
    max_sequence_length: int = 1024,
) -> BaselineOutput:
    """Stage 1 at half size, x2 upsample, stage 2 at full size: latents out."""
    condition, upsample = pipelines
    generator = torch.Generator("cpu").manual_seed(seed)
    guidance = GUIDANCE_OFF if guidance is None else guidance
    fps = float(geometry.fps)
    width1, height1 = geometry.stage1_size
    video, audio = condition(
        conditions=[LTX2VideoCondition(frames=image, index=0, strength=strength)],
        prompt=prompt, height=height1, width=width1, num_frames=geometry.generated_frames, frame_rate=fps,
        sigmas=DISTILLED_SIGMA_VALUES, generator=generator, output_type="latent", return_dict=False,
        max_sequence_length=max_sequence_length, **guidance,
    )
    upsampled = upsample(latents=video, output_type="latent", return_dict=False)[0]
    video, audio = condition(
        conditions=[LTX2VideoCondition(frames=image, index=0, strength=strength)],
        prompt=prompt, height=geometry.height, width=geometry.width, num_frames=geometry.generated_frames,
        frame_rate=fps, sigmas=STAGE_2_DISTILLED_SIGMA_VALUES, latents=upsampled, audio_latents=audio,
        generator=generator, output_type="latent", return_dict=False, max_sequence_length=max_sequence_length,
        **guidance,
    )
    return BaselineOutput(video=video, audio=audio)
