"""Admission of the request extensions: keyframe tokens and LoRA matrices counted against the GPU plan."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from pipeline.engine import Capacity, GiB, admit, list_loras
from pipeline.errors import LoraError, RequestTooLarge
from pipeline.geometry import plan_geometry
from pipeline.params import GenerationParams
from pipeline.placement import plan as planner


def header_only_lora(path: Path, rank: int, width: int, layers: int) -> Path:
    """A LoRA file whose header declares `layers` rank-`rank` pairs of `width` (no tensor data: headers are read)."""
    header = {}
    for layer in range(layers):
        stem = f"diffusion_model.transformer_blocks.{layer}.attn1.to_q"
        header[f"{stem}.lora_A.weight"] = {"dtype": "BF16", "shape": [rank, width], "data_offsets": [0, 0]}
        header[f"{stem}.lora_B.weight"] = {"dtype": "BF16", "shape": [width, rank], "data_offsets": [0, 0]}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def params(**extra) -> GenerationParams:
    return GenerationParams(prompt="p", num_frames=121, resolution="1024x576", **extra)


def test_keyframes_add_a_latent_frame_of_tokens_each():
    plain = plan_geometry(params(), 1024, 576)
    keyed = plan_geometry(params(keyframes=[{"frame_index": 60}, {"frame_index": 120}]), 1024, 576)
    frames, height, width = plain.latent_shape(2)
    assert keyed.video_tokens(2) == plain.video_tokens(2) + 2 * height * width
    assert keyed.latent_shape(2) == (frames, height, width)  # the video itself is unchanged


def test_lora_bytes_are_counted_against_the_card(tmp_path):
    # A card where the plain job fits with less than 1 GiB to spare.
    shape = plan_geometry(params(), 1024, 576)
    peak = planner.estimate("resident", shape).peak
    vram = next(v for v in range(int(peak), int(peak) + 64 * GiB, GiB // 8)
                if planner.usable_vram(v) >= peak + GiB // 2)
    capacity = Capacity("resident", vram)
    admit(params(), (1024, 576), capacity)
    header_only_lora(tmp_path / "big.safetensors", rank=1024, width=4096, layers=128)  # 2 GiB in bfloat16
    (found,), _ = list_loras(tmp_path)
    assert found.device_bytes() == 2 * GiB and found.rank == 1024 and found.layout == "official"
    with pytest.raises(RequestTooLarge):
        admit(params(loras=[{"name": "big"}]), (1024, 576), capacity, tmp_path)
    with pytest.raises(LoraError, match="unknown LoRA 'small'"):
        admit(params(loras=[{"name": "small"}]), (1024, 576), None, tmp_path)
