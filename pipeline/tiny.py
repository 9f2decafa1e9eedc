"""The tiny smoke-test model: random weights, real LTX-2.3 architecture flags and real geometry.

Widths are tiny so it runs on a CPU; everything that decides shapes is real: the video VAE
compresses 32x32 spatially and 8x in time, the upsampler doubles the latent, the audio path
has the 16 kHz mel hop of 160 and the BWE vocoder ends at 48 kHz. It is built offline
(tiny Gemma 3 and a tokenizer from an in-memory vocabulary), saved in the same layout as real
weights and loaded by the same loader. It produces noise: it exists to test the machinery.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from pipeline.components import COMPONENT_CLASSES, MODEL_INDEX

TINY_LABEL = "tiny smoke-test model (random weights: produces noise, not video)"
TINY_FORMAT = 1  # bump when the tiny configs change so cached copies are rebuilt

TEXT_HIDDEN, TEXT_LAYERS = 32, 2
VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 16
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 8
VIDEO_LATENT_CHANNELS = 8
AUDIO_LATENT_CHANNELS, MEL_BINS = 2, 16

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "transformer": dict(
        in_channels=VIDEO_LATENT_CHANNELS,
        out_channels=VIDEO_LATENT_CHANNELS,
        num_attention_heads=VIDEO_HEADS,
        attention_head_dim=VIDEO_HEAD_DIM,
        cross_attention_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        audio_in_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        audio_out_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        audio_num_attention_heads=AUDIO_HEADS,
        audio_attention_head_dim=AUDIO_HEAD_DIM,
        audio_cross_attention_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        num_layers=2,
        caption_channels=TEXT_HIDDEN,
        # The LTX-2.3 flags, as in the real configuration.
        gated_attn=True,
        cross_attn_mod=True,
        audio_gated_attn=True,
        audio_cross_attn_mod=True,
        use_prompt_embeddings=False,
        perturbed_attn=True,
        rope_type="split",
        rope_double_precision=True,
    ),
    "connectors": dict(
        caption_channels=TEXT_HIDDEN,
        text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=VIDEO_HEADS,
        video_connector_attention_head_dim=VIDEO_HEAD_DIM,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=128,
        audio_connector_num_attention_heads=AUDIO_HEADS,
        audio_connector_attention_head_dim=AUDIO_HEAD_DIM,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=128,
        rope_type="split",
        rope_double_precision=True,
        per_modality_projections=True,
        video_hidden_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
        proj_bias=True,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        latent_channels=VIDEO_LATENT_CHANNELS,
        block_out_channels=(8, 16, 32, 32),
        decoder_block_out_channels=(8, 16, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
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
        encoder_causal=True,
        decoder_causal=False,
        # Without the explicit ratios the class derives 64 and 16 from this block layout.
        spatial_compression_ratio=32,
        temporal_compression_ratio=8,
    ),
    "audio_vae": dict(
        base_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        output_channels=2,
        ch_mult=(1, 2, 4),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=256,
        latent_channels=AUDIO_LATENT_CHANNELS,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=MEL_BINS,
        double_z=True,
    ),
    "vocoder": dict(
        in_channels=2 * MEL_BINS,
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[16, 11, 8],
        upsample_factors=[8, 5, 4],  # 160x: one mel frame (hop 160 at 16 kHz) -> 160 samples
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        bwe_in_channels=2 * MEL_BINS,
        bwe_hidden_channels=32,
        bwe_upsample_kernel_sizes=[12, 11, 16],
        bwe_upsample_factors=[6, 5, 8],  # 240x over hop 80 at 16 kHz -> 48 kHz
        bwe_resnet_kernel_sizes=[3],
        bwe_resnet_dilations=[[1, 3, 5]],
        hop_length=80,
        num_mel_channels=MEL_BINS,
        input_sampling_rate=16000,
        output_sampling_rate=48000,
    ),
    "latent_upsampler": dict(
        in_channels=VIDEO_LATENT_CHANNELS,
        mid_channels=32,
        num_blocks_per_stage=1,
        dims=3,
        spatial_upsample=True,
        temporal_upsample=False,
        rational_spatial_scale=2.0,
        use_rational_resampler=False,
    ),
}


def _tiny_text_encoder() -> Gemma3ForConditionalGeneration:
    text = Gemma3TextConfig(
        vocab_size=128, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
        sliding_window=64,
    )
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8,
    )
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        image_token_index=100, boi_token_index=101, eoi_token_index=102,
    )
    return Gemma3ForConditionalGeneration(config)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    # A character-level vocabulary: every prompt tokenizes, with no download.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    chars = " abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    vocab = {token: i for i, token in enumerate([*specials, *chars])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=1024,
    )


def build_tiny_model(target: Path, seed: int = 0) -> Path:
    """Build the tiny model with fixed seeds and save it to `target` in the real on-disk layout."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent if target.parent.exists() else None))
    try:
        for offset, (name, cls) in enumerate(COMPONENT_CLASSES.items()):
            torch.manual_seed(seed + offset)
            module = _tiny_text_encoder() if name == "text_encoder" else cls(**TINY_CONFIGS[name])
            module.save_pretrained(staging / name)
        _tiny_tokenizer().save_pretrained(staging / "tokenizer")
        index = {
            "_class_name": "LTX2ImageToVideoPipeline",
            "label": TINY_LABEL,
            "smoke_test": True,
            "tiny_format": TINY_FORMAT,
            "max_sequence_length": 1024,
        }
        (staging / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: a half-built model never carries the final name
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_tiny_model(cache_dir: Path) -> Path:
    """The tiny model's directory under `cache_dir`, built on first use (about a second)."""
    target = Path(cache_dir) / f"tiny-ltx-2.3-v{TINY_FORMAT}"
    index = target / MODEL_INDEX
    if not index.is_file() or json.loads(index.read_text()).get("tiny_format") != TINY_FORMAT:
        target.parent.mkdir(parents=True, exist_ok=True)
        build_tiny_model(target)
    return target
