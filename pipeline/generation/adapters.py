"""LoRA adapters on the resident transformer, switched per job without touching its weights.

Each adapted linear layer gets one forward hook adding `(x @ A^T) @ (scale * B)^T` for the job's
LoRAs (their A and B matrices concatenated along the rank, scales folded into B). Chosen over
fusing `W += scale * B @ A` for three reasons, measured by what a server needs:

* switching is free and exact: removing the hooks leaves the base weights bit for bit as loaded
  (fusing and unfusing in bfloat16 leaves rounding residue, and an exact restore needs a second
  copy of every adapted weight: ~44 GB for a LoRA on all of the 22B transformer's layers);
* it works the same under every memory plan: fp8 weights (fusing would re-quantize), offloaded
  and streamed weights (the adapter matrices stay on the GPU);
* its cost per pass is small: two rank-r matmuls per adapted layer, 2r / width of the layer's own
  FLOPs (r = 64 on the 4096-wide transformer: ~3%), and nothing when a job uses no LoRA.

ltx-core fuses (`apply_loras`: `W + (B * strength) @ A`), which is the same function of the
input; tests/parity compares the two on a tiny LoRA (relative error ~1e-7 in float32).

Loaded LoRAs are cached on the CPU (by name and sha256, so a replaced file reloads); the active
set's matrices live on the compute device; the same set on consecutive jobs costs nothing.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from pipeline.errors import LoraError
from pipeline.weights.lora import LoraFile, LoraFileError, find_lora, split_key
from pipeline.weights.single_file import DIT_PREFIX, to_diffusers

log = logging.getLogger("ltx_server.lora")
CPU_CACHE_ENTRIES = 8  # parsed LoRAs kept in host memory (each is its files' size)


@dataclass(frozen=True)
class LoadedLora:
    """One LoRA's matrices by the transformer's module name: (A (r, in), B (out, r) * alpha / r)."""

    file: LoraFile
    matrices: dict[str, tuple[torch.Tensor, torch.Tensor]]


def official_module(name: str) -> str | None:
    """The diffusers transformer module an official-layout module name maps to (None: not the transformer)."""
    target = to_diffusers(f"{DIT_PREFIX}{name}.weight")
    if target is None or target[0] != "transformer":
        return None
    return target[1][: -len(".weight")]


def _alpha_factors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], layout: str) -> dict[str, float]:
    """alpha / rank per module for the diffusers and PEFT layouts (per-module `.alpha`, else adapter metadata)."""
    if layout == "official":
        return {}  # ltx-core ignores alpha: the file's B already carries the scale
    default = None
    try:
        adapter = json.loads(metadata.get("lora_adapter_metadata", "{}"))
        if isinstance(adapter, dict) and adapter.get("lora_alpha") and adapter.get("r"):
            default = float(adapter["lora_alpha"]) / float(adapter["r"])
    except ValueError:
        pass
    factors = {}
    for key, value in tensors.items():
        split = split_key(key)
        if split is not None and split[2] == "alpha":
            rank = tensors[key.removesuffix(".alpha") + ".lora_A.weight"].shape[0]
            factors[split[1]] = float(value) / rank
    if default is not None:
        factors.setdefault("*", default)
    return factors


def load_lora(file: LoraFile, transformer: torch.nn.Module) -> LoadedLora:
    """Read a LoRA file and map its modules onto `transformer`'s linear layers (float32, on the CPU).

    Raises `LoraError` when nothing in it adapts this model or a matrix does not fit its layer.
    """
    try:
        with safe_open(str(file.path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LoraError(f"LoRA {file.name!r} cannot be read: {exc}") from None
    factors = _alpha_factors(tensors, metadata, file.layout)
    layers = {name: module for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    matrices: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    ignored = []
    for key, a in tensors.items():
        split = split_key(key)
        if split is None or split[2] != "A":
            continue
        _, module, _ = split
        b = tensors.get(key.removesuffix(".lora_A.weight") + ".lora_B.weight")
        if b is None:
            continue
        target = official_module(module) if file.layout == "official" else module
        layer = layers.get(target) if target is not None else None
        if layer is None:
            ignored.append(module)
            continue
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
            raise LoraError(f"LoRA {file.name!r} does not fit this model: {module} is {layer.out_features}x"
                            f"{layer.in_features}, the LoRA's matrices are {tuple(b.shape)} and {tuple(a.shape)}")
        factor = factors.get(module, factors.get("*", 1.0))
        matrices[target] = (a.float(), b.float() * factor if factor != 1.0 else b.float())
    if not matrices:
        raise LoraError(f"LoRA {file.name!r} adapts no layer of this model's transformer (is it for another model?)")
    if ignored:
        # ltx-core fuses LoRAs into the transformer only and skips the rest silently; so do we, but say so.
        log.warning("LoRA %s: %d of its modules are not transformer layers here and are ignored (e.g. %s)",
                    file.name, len(ignored), ignored[0])
    return LoadedLora(file, matrices)


class LoraAdapters:
    """The LoRA set of the current job on one transformer: hooks, device matrices and a CPU cache."""

    def __init__(self, transformer: torch.nn.Module, directory: Path | None, device: torch.device,
                 dtype: torch.dtype):
        self.transformer = transformer
        self.directory = Path(directory) if directory is not None else None
        self.device, self.dtype = device, dtype
        self._cache: OrderedDict[tuple[str, str], LoadedLora] = OrderedDict()
        self._hooks: list[Any] = []
        self._active_key: tuple[tuple[str, str, float], ...] = ()
        self.active: list[dict[str, Any]] = []  # [{name, scale, sha256}] of the set in use
        self.device_bytes = 0  # the active set's matrices on the device
        self.switches = 0  # how many times the hooks were rebuilt (consecutive identical sets: none)

    def files(self, choices: Sequence[tuple[str, float]]) -> list[LoraFile]:
        """The directory's files for `choices` (name, scale); `LoraError` for an unknown name."""
        try:
            return [find_lora(self.directory, name) for name, _ in choices]
        except LoraFileError as exc:
            raise LoraError(str(exc)) from None

    def use(self, choices: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
        """Make `choices` (name, scale) the adapters of the next passes; [] removes all. Returns the set in use."""
        files = self.files(choices) if choices else []
        if files and self._compiled():
            # torch.compile'd blocks do not re-check hooks added after tracing (dynamo's
            # skip_nnmodule_hook_guards), and per-block adapter matrices would exceed its recompile
            # limit: the hooks would be silently ignored. Refused rather than wrong.
            raise LoraError("LoRAs cannot be used on a worker started with --compile (its compiled transformer "
                            "blocks would ignore them); start the server without --compile to use LoRAs")
        key = tuple((f.name, f.sha256, float(scale)) for f, (_, scale) in zip(files, choices, strict=True))
        if key == self._active_key:
            return self.active
        self.clear()
        if not files:
            return self.active
        loaded = [self._load(f) for f in files]
        per_layer: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for lora, (_, scale) in zip(loaded, choices, strict=True):
            for layer, (a, b) in lora.matrices.items():
                per_layer.setdefault(layer, []).append((a, b * float(scale)))
        modules = dict(self.transformer.named_modules())
        total = 0
        for layer, pairs in per_layer.items():
            a = torch.cat([pair[0] for pair in pairs], dim=0).to(self.device, self.dtype)
            b = torch.cat([pair[1] for pair in pairs], dim=1).to(self.device, self.dtype)
            total += a.numel() * a.element_size() + b.numel() * b.element_size()
            self._hooks.append(modules[layer].register_forward_hook(_delta_hook(a, b)))
        self._active_key = key
        self.active = [{"name": f.name, "scale": float(scale), "sha256": f.sha256}
                       for f, (_, scale) in zip(files, choices, strict=True)]
        self.device_bytes = total
        self.switches += 1
        log.info("LoRAs in use: %s (%d layers, %.1f MiB on %s)",
                 ", ".join(f"{a['name']}@{a['scale']:g}" for a in self.active), len(per_layer), total / 2**20,
                 self.device)
        return self.active

    def _compiled(self) -> bool:
        """Whether the transformer's blocks were torch.compile'd (`placement.apply.compile_transformer`)."""
        return any(getattr(module, "_compiled_call_impl", None) is not None for module in self.transformer.modules())

    def clear(self) -> None:
        """Remove every hook: the transformer computes exactly its base weights again."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._active_key, self.active, self.device_bytes = (), [], 0

    def _load(self, file: LoraFile) -> LoadedLora:
        cache_key = (file.name, file.sha256)
        cached = self._cache.get(cache_key)
        if cached is not None:
            self._cache.move_to_end(cache_key)
            return cached
        loaded = load_lora(file, self.transformer)
        self._cache[cache_key] = loaded
        while len(self._cache) > CPU_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return loaded


def _delta_hook(a: torch.Tensor, b: torch.Tensor):
    """A forward hook adding the low-rank delta (x A^T) B^T to a linear layer's output."""

    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        delta = torch.nn.functional.linear(torch.nn.functional.linear(x.to(a.dtype), a), b)
        return output + delta.to(output.dtype)

    return hook
