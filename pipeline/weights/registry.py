"""The bottom of the weights package: which classes the components are, and their real LTX-2.3 configs.

Everything else in `pipeline.weights` builds on this module, and it imports none of them.

Sources (facts, re-typed here): diffusers' `scripts/convert_ltx2_to_diffusers.py` (the "2.3"
branches of `get_ltx2_*_config`), the `LTX2LatentUpsamplerModel` defaults in diffusers 0.42.1
with `use_rational_resampler=False` for 2.3, and the public `config.json` of
`google/gemma-3-12b-it`. They serve three purposes:

* `weights check` instantiates them on the meta device and compares tensor names and shapes
  with a weights directory's safetensors headers (no data loaded);
* the memory planner sizes components from their parameter counts (pinned in tests);
* tests pin their parameter counts to the published figures and check that the tiny model
  carries the same architecture flags.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from pipeline.geometry import OUTPUT_SAMPLE_RATE, VAE_SPATIAL, VAE_TEMPORAL

MODEL_INDEX = "model_index.json"

# Folder name -> class; every one is a plain nn.Module configured by its config.json.
COMPONENT_CLASSES: dict[str, Any] = {
    "transformer": LTX2VideoTransformer3DModel,
    "connectors": LTX2TextConnectors,
    "vae": AutoencoderKLLTX2Video,
    "audio_vae": AutoencoderKLLTX2Audio,
    "vocoder": LTX2VocoderWithBWE,
    "latent_upsampler": LTX2LatentUpsamplerModel,
    "text_encoder": Gemma3ForConditionalGeneration,
}

# Where a diffusers-layout config is known to differ from what Lightricks' reference computes,
# the reference wins (FIDELITY.md): the 16 kHz vocoder stage clamps its output to [-1, 1].
REFERENCE_OVERRIDES: dict[str, dict[str, Any]] = {"vocoder": {"final_act_fn": "clamp"}}

# Published parameter counts (reference figures, issue 4); tests allow a small tolerance.
REFERENCE_PARAMS: dict[str, float] = {
    "transformer": 18.99e9,
    "connectors": 3.17e9,
    "vae": 0.73e9,
    "audio_vae": 53e6,
    "vocoder": 129e6,
    "latent_upsampler": 498e6,
    "text_encoder": 12e9,
}

REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "transformer": dict(
        in_channels=128,
        out_channels=128,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=32,
        attention_head_dim=128,
        cross_attention_dim=4096,
        vae_scale_factors=(VAE_TEMPORAL, VAE_SPATIAL, VAE_SPATIAL),
        pos_embed_max_pos=20,
        base_height=2048,
        base_width=2048,
        gated_attn=True,
        cross_attn_mod=True,
        audio_in_channels=128,
        audio_out_channels=128,
        audio_patch_size=1,
        audio_patch_size_t=1,
        audio_num_attention_heads=32,
        audio_attention_head_dim=64,
        audio_cross_attention_dim=2048,
        audio_scale_factor=4,
        audio_pos_embed_max_pos=20,
        audio_sampling_rate=16000,
        audio_hop_length=160,
        audio_gated_attn=True,
        audio_cross_attn_mod=True,
        num_layers=48,
        activation_fn="gelu-approximate",
        qk_norm="rms_norm_across_heads",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=3840,
        attention_bias=True,
        attention_out_bias=True,
        rope_theta=10000.0,
        rope_double_precision=True,
        causal_offset=1,
        timestep_scale_multiplier=1000,
        cross_attn_timestep_scale_multiplier=1000,
        rope_type="split",
        use_prompt_embeddings=False,
        perturbed_attn=True,
    ),
    "connectors": dict(
        caption_channels=3840,
        text_proj_in_factor=49,  # Gemma 3 12B: 48 layers + the embedding output
        video_connector_num_attention_heads=32,
        video_connector_attention_head_dim=128,
        video_connector_num_layers=8,
        video_connector_num_learnable_registers=128,
        video_gated_attn=True,
        audio_connector_num_attention_heads=32,
        audio_connector_attention_head_dim=64,
        audio_connector_num_layers=8,
        audio_connector_num_learnable_registers=128,
        audio_gated_attn=True,
        connector_rope_base_seq_len=4096,
        rope_theta=10000.0,
        rope_double_precision=True,
        causal_temporal_positioning=False,
        rope_type="split",
        per_modality_projections=True,
        video_hidden_dim=4096,
        audio_hidden_dim=2048,
        proj_bias=True,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        latent_channels=128,
        block_out_channels=(256, 512, 1024, 1024),
        down_block_types=("LTX2VideoDownBlock3D",) * 4,
        decoder_block_out_channels=(256, 512, 512, 1024),
        layers_per_block=(4, 6, 4, 2, 2),
        decoder_layers_per_block=(4, 6, 4, 2, 2),
        spatio_temporal_scaling=(True, True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True, True),
        decoder_inject_noise=(False, False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
        upsample_residual=(False, False, False, False),
        upsample_factor=(2, 2, 1, 2),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        resnet_norm_eps=1e-6,
        encoder_causal=True,
        decoder_causal=False,
        encoder_spatial_padding_mode="zeros",
        decoder_spatial_padding_mode="zeros",
        spatial_compression_ratio=VAE_SPATIAL,
        temporal_compression_ratio=VAE_TEMPORAL,
    ),
    "audio_vae": dict(  # unchanged from LTX-2.0
        base_channels=128,
        output_channels=2,
        ch_mult=(1, 2, 4),
        num_res_blocks=2,
        attn_resolutions=None,
        in_channels=2,
        resolution=256,
        latent_channels=8,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=64,
        double_z=True,
    ),
    "vocoder": dict(  # LTX2VocoderWithBWE: 16 kHz vocoder + bandwidth extension to 48 kHz
        in_channels=128,
        hidden_channels=1536,
        out_channels=2,
        upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
        upsample_factors=[5, 2, 2, 2, 2, 2],
        resnet_kernel_sizes=[3, 7, 11],
        resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        act_fn="snakebeta",
        leaky_relu_negative_slope=0.1,
        antialias=True,
        antialias_ratio=2,
        antialias_kernel_size=12,
        # The reference (ltx-core) applies the 16 kHz stage's final activation: a clamp, since
        # use_tanh_at_final is off. diffusers' 2.3 conversion config has None here (no clamp).
        final_act_fn="clamp",
        final_bias=False,
        bwe_in_channels=128,
        bwe_hidden_channels=512,
        bwe_out_channels=2,
        bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4],
        bwe_upsample_factors=[6, 5, 2, 2, 2],
        bwe_resnet_kernel_sizes=[3, 7, 11],
        bwe_resnet_dilations=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        bwe_act_fn="snakebeta",
        bwe_leaky_relu_negative_slope=0.1,
        bwe_antialias=True,
        bwe_antialias_ratio=2,
        bwe_antialias_kernel_size=12,
        bwe_final_act_fn=None,
        bwe_final_bias=False,
        filter_length=512,
        hop_length=80,
        window_length=512,
        num_mel_channels=64,
        input_sampling_rate=16000,
        output_sampling_rate=OUTPUT_SAMPLE_RATE,
    ),
    "latent_upsampler": dict(
        in_channels=128,
        mid_channels=1024,
        num_blocks_per_stage=4,
        dims=3,
        spatial_upsample=True,
        temporal_upsample=False,
        rational_spatial_scale=2.0,
        use_rational_resampler=False,
    ),
}

# google/gemma-3-12b-it (the QAT "unquantized" repo shares this architecture), as nested dicts.
GEMMA3_12B_CONFIG: dict[str, Any] = dict(
    boi_token_index=255999,
    eoi_token_index=256000,
    image_token_index=262144,
    mm_tokens_per_image=256,
    text_config=dict(
        vocab_size=262208,
        hidden_size=3840,
        intermediate_size=15360,
        num_hidden_layers=48,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=256,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=131072,
        query_pre_attn_scalar=256,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        rope_scaling={"factor": 8.0, "rope_type": "linear"},
        sliding_window=1024,
        sliding_window_pattern=6,
        attention_bias=False,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
    ),
    vision_config=dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        num_channels=3,
        image_size=896,
        patch_size=14,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    ),
)


def gemma_config() -> Gemma3Config:
    """The Gemma 3 12B `Gemma3Config` (text + SigLIP vision tower) used by LTX-2.3."""
    return Gemma3Config(**GEMMA3_12B_CONFIG)


def meta_module(
    name: str, configs: dict[str, dict[str, Any]] | None = None, include_buffers: bool = True
) -> torch.nn.Module:
    """Instantiate one component on the meta device: real shapes, no memory, no data.

    `configs` defaults to the real ones; pass e.g. the tiny configs to build those the same way.
    `include_buffers=False` keeps buffers real (computed at init: RoPE tables, filters), as a
    loader needs, since non-persistent buffers are never in a checkpoint. The real-config
    instances are cached and shared: treat them as read-only.
    """
    if configs is None and include_buffers:
        return _real_meta_module(name)
    return _build_meta(name, configs or REAL_CONFIGS, include_buffers)


@functools.cache
def _real_meta_module(name: str) -> torch.nn.Module:
    # Shared read-only instance: building the real transformer takes seconds even on meta.
    return _build_meta(name, REAL_CONFIGS, True)


def _build_meta(name: str, configs: dict[str, dict[str, Any]], include_buffers: bool) -> torch.nn.Module:
    cls = COMPONENT_CLASSES[name]
    # init_empty_weights also puts buffers on meta, so even the VAE's statistics cost nothing.
    with init_empty_weights(include_buffers=include_buffers):
        if name == "text_encoder":
            return cls(gemma_config())
        return cls(**configs[name])


def param_count(module: torch.nn.Module) -> int:
    """Parameters of a module, shared (tied) tensors counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total

