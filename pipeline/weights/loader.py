"""The model's components and the one loader for them (real weights and the tiny model alike).

On-disk layout (the diffusers layout, as in `diffusers/LTX-2.3-Distilled-Diffusers`): one folder
per component with its `config.json` and safetensors, plus `model_index.json` at the top:

    transformer/  connectors/  vae/  audio_vae/  vocoder/  latent_upsampler/
    text_encoder/  tokenizer/  model_index.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel, LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
from transformers import AutoTokenizer, Gemma3ForConditionalGeneration, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from pipeline.errors import WeightsError
from pipeline.weights.registry import COMPONENT_CLASSES, MODEL_INDEX, REFERENCE_OVERRIDES
from pipeline.weights.single_file import (
    CHECKPOINT_GLOB,
    SINGLE_FILE_INDEX,
    UPSAMPLER_GLOB,
    find_single_file,
    load_single_file,
)

Place = Callable[[str, torch.nn.Module], torch.nn.Module]


@dataclass
class Components:
    """Every loaded module of LTX-2.3, resident for the life of a worker."""

    transformer: LTX2VideoTransformer3DModel
    connectors: LTX2TextConnectors
    vae: AutoencoderKLLTX2Video
    audio_vae: AutoencoderKLLTX2Audio
    vocoder: LTX2VocoderWithBWE
    latent_upsampler: LTX2LatentUpsamplerModel
    text_encoder: Gemma3ForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    index: dict[str, Any]

    @property
    def is_smoke_test(self) -> bool:
        """True for the tiny random-weight model, which produces noise."""
        return bool(self.index.get("smoke_test"))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.nn.Module)
        }


def read_index(weights_dir: Path) -> dict[str, Any]:
    """The top-level `model_index.json`, or a `WeightsError` naming the directory."""
    path = Path(weights_dir) / MODEL_INDEX
    if not path.is_file():
        raise WeightsError(f"{weights_dir} is not a weights directory: {MODEL_INDEX} is missing")
    return json.loads(path.read_text())


def is_weights_directory(path: Path) -> bool:
    """True for either layout the loader reads: diffusers folders, or the official single files."""
    return (Path(path) / MODEL_INDEX).is_file() or find_single_file(Path(path)) is not None


def load_components(
    weights_dir: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    place: Place | None = None,
) -> Components:
    """Load every component onto `device` in `dtype`, in eval mode.

    Reads the diffusers layout, or Lightricks' official single-file checkpoints plus
    `text_encoder/` and `tokenizer/` folders. `place(name, module)` (from an execution plan)
    decides where each module goes; without it everything moves to `device`.
    """
    weights_dir = Path(weights_dir)
    if not (weights_dir / MODEL_INDEX).is_file() and find_single_file(weights_dir) is not None:
        return load_single_file_components(weights_dir, device, dtype, place)
    index = read_index(weights_dir)
    missing = [name for name in [*COMPONENT_CLASSES, "tokenizer"] if not (weights_dir / name).is_dir()]
    if missing:
        raise WeightsError(f"{weights_dir} lacks component folders: {', '.join(missing)}")
    loaded: dict[str, Any] = {}
    transformers_logging.disable_progress_bar()  # one bar per shard is noise in a server's log
    for name, cls in COMPONENT_CLASSES.items():
        overrides = REFERENCE_OVERRIDES.get(name, {})
        module = cls.from_pretrained(weights_dir / name, torch_dtype=dtype, **overrides).eval().requires_grad_(False)
        loaded[name] = place(name, module) if place is not None else module.to(device)
    tokenizer = AutoTokenizer.from_pretrained(weights_dir / "tokenizer")
    tokenizer.padding_side = "left"  # Gemma prompts are left-padded for LTX
    return Components(**loaded, tokenizer=tokenizer, index=index)


def load_single_file_components(
    weights_dir: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    place: Place | None = None,
) -> Components:
    """`Components` from the official files plus `text_encoder/` and `tokenizer/` folders."""
    weights_dir = Path(weights_dir)
    found = find_single_file(weights_dir)
    missing = [n for n in ("text_encoder", "tokenizer") if not (weights_dir / n).is_dir()]
    if found is None or missing:
        what = [f"{CHECKPOINT_GLOB} and {UPSAMPLER_GLOB}"] if found is None else []
        raise WeightsError(f"{weights_dir} lacks {', '.join(what + missing)} for the single-file layout")
    place = place or (lambda name, module: module.to(device))
    modules = load_single_file(*found, dtype=dtype, place=place)
    text_encoder = Gemma3ForConditionalGeneration.from_pretrained(weights_dir / "text_encoder", torch_dtype=dtype)
    modules["text_encoder"] = place("text_encoder", text_encoder.eval().requires_grad_(False))
    tokenizer = AutoTokenizer.from_pretrained(weights_dir / "tokenizer")
    tokenizer.padding_side = "left"  # Gemma prompts are left-padded for LTX
    return Components(**modules, tokenizer=tokenizer, index=dict(SINGLE_FILE_INDEX))
