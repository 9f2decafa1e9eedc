"""Tiny LoRA files for the tiny model (diffusers layout) and for tests of the LoRA directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.weights.registry import meta_module


def tiny_transformer_linears(weights_dir: Path) -> list[tuple[str, torch.nn.Linear]]:
    """The tiny model's transformer linear layers (diffusers names), built on the meta device from its config."""
    config = json.loads((Path(weights_dir) / "transformer" / "config.json").read_text())
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    model = meta_module("transformer", {"transformer": config})
    return [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def build_tiny_lora(weights_dir: Path, path: Path, rank: int = 4, seed: int = 0, every: int = 1,
                    scale: float = 0.5, prefix: str = "transformer.", alpha: float | None = None) -> Path:
    """A LoRA for the tiny model in the diffusers layout (`transformer.<module>.lora_A.weight`, ...).

    `alpha` adds diffusers' `lora_adapter_metadata` (lora_alpha, r), which scales by alpha / rank.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in tiny_transformer_linears(weights_dir)[::every]:
        tensors[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=generator) * scale
        tensors[f"{prefix}{name}.lora_B.weight"] = torch.randn(module.out_features, rank,
                                                               generator=generator) * scale / rank
    metadata = None if alpha is None else {"lora_adapter_metadata": json.dumps({"lora_alpha": alpha, "r": rank})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path, metadata=metadata)
    return path
