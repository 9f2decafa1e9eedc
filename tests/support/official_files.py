"""Official-layout single-file checkpoints for tests and benches, and the process memory figures.

`to_official` renames a diffusers tensor name to Lightricks' (the inverse of
`pipeline.weights.single_file.to_diffusers`, pinned over every real name by
tests/integration/pipeline/test_single_file.py).
`write_official` writes a component set (the tiny configs by default) under those names, straight
from the shapes of the meta-device modules: no module is built, so a few hundred MB take seconds.
`SCALED_CONFIGS` widens and deepens the tiny transformer until the checkpoint is large next to
its largest tensor (about 250 MB in float32 against 9 MB), what a loader's memory bound needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipeline.weights.inspect import expected_shapes
from pipeline.weights.registry import meta_module
from pipeline.weights.single_file import SINGLE_FILE_COMPONENTS
from pipeline.weights.tiny import TINY_CONFIGS

_INVERSE_T = [
    ("prompt_adaln", "prompt_adaln_single"), ("norm_k", "k_norm"), ("norm_q", "q_norm"),
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("audio_proj_in", "audio_patchify_proj"),
]


def to_official(component: str, name: str) -> str:
    """Test-only inverse of `to_diffusers` (pinned by the round trip over the fixture)."""
    if component == "transformer":
        for old, new in (("time_embed.", "adaln_single."), ("audio_time_embed.", "audio_adaln_single.")):
            if name.startswith(old):
                name = new + name[len(old):]
        for old, new in _INVERSE_T:
            name = name.replace(old, new)
        name = re.sub(r"(^|\.)proj_in\.", r"\1patchify_proj.", name)
        return "model.diffusion_model." + name
    if component == "connectors":
        for side in ("video", "audio"):
            if name.startswith(f"{side}_text_proj_in."):
                return f"text_embedding_projection.{side}_aggregate_embed." + name.split(".", 1)[1]
        for old, new in (
            ("video_connector", "video_embeddings_connector"), ("audio_connector", "audio_embeddings_connector"),
            ("transformer_blocks", "transformer_1d_blocks"), ("norm_q", "q_norm"), ("norm_k", "k_norm"),
        ):
            name = name.replace(old, new)
        return "model.diffusion_model." + name
    if component in ("vae", "audio_vae"):
        stats = {
            "latents_mean": "per_channel_statistics.mean-of-means",
            "latents_std": "per_channel_statistics.std-of-means",
        }
        if name in stats:
            return f"{component}.{stats[name]}"
        if component == "vae":
            name = re.sub(r"^encoder\.mid_block\.", "encoder.down_blocks.@8.", name)
            name = re.sub(r"^decoder\.mid_block\.", "decoder.up_blocks.@0.", name)
            name = re.sub(r"down_blocks\.(\d)\.downsamplers\.0\.", lambda m: f"down_blocks.@{2 * int(m[1]) + 1}.", name)
            name = re.sub(r"down_blocks\.(\d)\.", lambda m: f"down_blocks.@{2 * int(m[1])}.", name)
            name = re.sub(r"up_blocks\.(\d)\.upsamplers\.0\.", lambda m: f"up_blocks.@{2 * int(m[1]) + 1}.", name)
            name = re.sub(r"up_blocks\.(\d)\.", lambda m: f"up_blocks.@{2 * int(m[1]) + 2}.", name)
            name = name.replace("@", "").replace("resnets", "res_blocks")
            name = name.replace("time_embedder", "last_time_embedder")
            name = name.replace("scale_shift_table", "last_scale_shift_table")
        return f"{component}.{name}"
    if component == "vocoder":
        name = re.sub(r"\.upsamplers\.(\d+)\.(weight|bias)$", r".ups.\1.\2", name)
        for old, new in (("resnets", "resblocks"), ("conv_in", "conv_pre"), ("conv_out", "conv_post"),
                         ("act_out", "act_post"), ("downsample.", "downsample.lowpass.")):
            name = name.replace(old, new)
        return "vocoder." + name
    raise AssertionError(component)


SCALED_CONFIGS: dict[str, dict[str, Any]] = {
    **TINY_CONFIGS,
    "transformer": {
        **TINY_CONFIGS["transformer"],
        "num_attention_heads": 8, "attention_head_dim": 64, "cross_attention_dim": 512,
        "audio_num_attention_heads": 4, "audio_attention_head_dim": 32, "audio_cross_attention_dim": 128,
        "num_layers": 12,
    },
}


def write_official(
    directory: Path, configs: dict[str, dict[str, Any]] = TINY_CONFIGS, dtype: torch.dtype = torch.float32,
    release: str = "1.1", seed: int = 0,
) -> tuple[Path, Path]:
    """(checkpoint, upsampler) in the official layout under `directory`, random values in `dtype`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    def fill(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, dtype=torch.float32).normal_(0.0, 0.02, generator=generator).to(dtype)

    combined = {}
    for name in SINGLE_FILE_COMPONENTS:
        want, _ = expected_shapes(meta_module(name, configs))
        combined.update({to_official(name, key): fill(shape) for key, shape in want.items()})
    checkpoint = directory / f"ltx-2.3-22b-distilled-{release}.safetensors"
    save_file(combined, checkpoint, metadata={"model_version": "2.3.0"})
    del combined
    want, _ = expected_shapes(meta_module("latent_upsampler", configs))
    upsampler = directory / f"ltx-2.3-spatial-upscaler-x2-{release}.safetensors"
    save_file({key: fill(shape) for key, shape in want.items()}, upsampler)
    return checkpoint, upsampler


def memory_status() -> dict[str, float]:
    """This process's VmRSS, VmHWM (peak RSS), RssAnon and RssFile in MiB, from /proc/self/status."""
    figures = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                figures[key] = int(value.split()[0]) / 1024
    return figures


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that the next peak is the next step's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
