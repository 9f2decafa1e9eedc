"""The tiny smoke-test model: random weights, real LTX-2.3 architecture flags and real geometry.

Widths are tiny so it runs on a CPU; everything that decides shapes is real: the video VAE
compresses 32x32 spatially and 8x in time, the upsampler doubles the latent, the audio path
has the 16 kHz mel hop of 160 and the BWE vocoder ends at 48 kHz. It is built offline
(tiny Gemma 3 and a tokenizer from an in-memory vocabulary), saved in the same layout as real
weights and loaded by the same loader. It produces noise: it exists to test the machinery.
"""

from __future__ import annotations

import fcntl
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

from pipeline.weights.registry import COMPONENT_CLASSES, MODEL_INDEX, REAL_CONFIGS

TINY_LABEL = "tiny smoke-test model (random weights: produces noise, not video)"
TINY_FORMAT = 3  # bump when the tiny configs change so cached copies are rebuilt

TEXT_HIDDEN, TEXT_LAYERS = 32, 2
VIDEO_HEADS, VIDEO_HEAD_DIM = 2, 16
AUDIO_HEADS, AUDIO_HEAD_DIM = 2, 8
VIDEO_LATENT_CHANNELS = 8
AUDIO_LATENT_CHANNELS, MEL_BINS = 2, 16

# Only sizes differ from the real configuration; every architecture flag is the real one, by
# construction (`{**REAL_CONFIGS[name], **TINY_SIZES[name]}`).
TINY_SIZES: dict[str, dict[str, Any]] = {
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
    ),
    "connectors": dict(
        caption_channels=TEXT_HIDDEN,
        text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=VIDEO_HEADS,
        video_connector_attention_head_dim=VIDEO_HEAD_DIM,
        video_connector_num_layers=1,
        audio_connector_num_attention_heads=AUDIO_HEADS,
        audio_connector_attention_head_dim=AUDIO_HEAD_DIM,
        audio_connector_num_layers=1,
        video_hidden_dim=VIDEO_HEADS * VIDEO_HEAD_DIM,
        audio_hidden_dim=AUDIO_HEADS * AUDIO_HEAD_DIM,
    ),
    "vae": dict(
        latent_channels=VIDEO_LATENT_CHANNELS,
        block_out_channels=(8, 16, 32, 32),
        decoder_block_out_channels=(8, 16, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
    ),
    "audio_vae": dict(
        base_channels=AUDIO_LATENT_CHANNELS * MEL_BINS // 4,  # must equal latent_channels * mel_bins / 4
        num_res_blocks=1,
        latent_channels=AUDIO_LATENT_CHANNELS,
        mel_bins=MEL_BINS,
    ),
    "vocoder": dict(
        in_channels=2 * MEL_BINS,
        hidden_channels=32,
        upsample_kernel_sizes=[16, 11, 8],
        upsample_factors=[8, 5, 4],  # 160x, as the real [5, 2, 2, 2, 2, 2]: one 16 kHz mel hop -> 160 samples
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        bwe_in_channels=2 * MEL_BINS,
        bwe_hidden_channels=32,
        bwe_upsample_kernel_sizes=[12, 11, 16],
        bwe_upsample_factors=[6, 5, 8],  # 240x over hop 80, as the real [6, 5, 2, 2, 2]: 16 kHz -> 48 kHz
        bwe_resnet_kernel_sizes=[3],
        bwe_resnet_dilations=[[1, 3, 5]],
        num_mel_channels=MEL_BINS,
    ),
    "latent_upsampler": dict(
        in_channels=VIDEO_LATENT_CHANNELS,
        mid_channels=32,
        num_blocks_per_stage=1,
    ),
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {name: {**REAL_CONFIGS[name], **TINY_SIZES[name]} for name in TINY_SIZES}


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
    """The tiny model's directory under `cache_dir`, built on first use (about a second).

    Safe across processes (a server and its workers start together): the build runs under an
    exclusive lock on the cache directory, and whoever comes second finds it built.
    """
    target = Path(cache_dir) / f"tiny-ltx-2.3-v{TINY_FORMAT}"
    index = target / MODEL_INDEX
    built = lambda: index.is_file() and json.loads(index.read_text()).get("tiny_format") == TINY_FORMAT  # noqa: E731
    if built():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tiny-build.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built():
            build_tiny_model(target)
    return target
