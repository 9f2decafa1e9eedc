"""Apply a memory plan (`pipeline.placement.plan`) to loaded components on a GPU.

What each plan does to the modules:

* `resident`: every component on the GPU in bf16.
* `encoder-offload`: as resident, except Gemma's language model, which stays in pinned host
  RAM and is copied to the GPU for each encoder call (`EncoderSwap`), then dropped again.
* `fp8`: the weights of the transformer's 48 repeated blocks are stored in `float8_e4m3fn` and
  upcast to bf16 layer by layer for compute (diffusers' layerwise casting); the layers outside
  the blocks (adaLN / modulation, projections) and all norms stay bf16 (`FP8_KEEP_BF16`).
  Gemma's 48 layers stay in pinned host RAM and visit the GPU one at a time (its embeddings
  stay on the GPU). The copies are synchronous: encoding runs only on prompt-cache misses.
* `offload`: transformer (block level) and connectors (leaf level) stream from pinned host
  RAM on a side CUDA stream (diffusers group offloading, prefetching the next group while the
  current one computes); the transformer's non-block layers stay on the GPU; weights are pinned
  tensor by tensor (no second full copy at load); Gemma as in `fp8`; the VAEs, vocoder and
  upsampler stay.

Regional compile (`--compile`) runs only where the transformer is plain bf16 (`resident`,
`encoder-offload`); under `fp8` and `offload` it is skipped with a warning (the plan's
`compile_blocker` says why).

Common to all: attention runs through PyTorch SDPA (flash / memory-efficient kernels);
Gemma's `lm_head` is replaced by an identity (LTX reads hidden states, never logits: this
skips a 1024 x 262k logits product and unties the 2 GB embedding, which would otherwise be
dragged along by offloading); diffusers' VAE tiling is kept off (the runtime tiles the decode
as the reference does); and the repeated transformer blocks can be compiled regionally (opt-in,
once per worker).

Nothing here is imported by the CPU path unless asked for; what can be exercised on a CPU is
unit-tested (tests/integration/pipeline/test_execution.py), the rest follows the diffusers APIs as documented.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import apply_group_offloading
from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

from pipeline.geometry import Geometry
from pipeline.placement import plan as memory_plan
from pipeline.placement.host import physical_memory_bytes
from pipeline.placement.plan import Estimate

log = logging.getLogger(__name__)

FP8_STORAGE = torch.float8_e4m3fn
COMPUTE_DTYPE = torch.bfloat16
_COMPILED_MARK = "_ltx_regionally_compiled"
# Under fp8, only the 48 repeated blocks' layers are stored in fp8. Everything outside them stays
# bf16: the timestep and prompt adaLN (`time_embed`, `prompt_adaln`, their audio twins), the
# audio-video cross-attention modulation (`av_cross_attn_*`) and the in/out projections, 0.43B
# parameters (0.85 GB) that set every token's scale and shift, where fp8's 3 mantissa bits would
# hurt most; diffusers' default patterns (norms, exactly `proj_in`/`proj_out`) cast all of them.
# Norms inside the blocks stay bf16 too. re.search patterns over dotted module names; the root's
# name is "" and must not match (it would skip everything).
FP8_KEEP_BF16 = ("^(?!transformer_blocks|$)", "norm")


def gpu_total_memory(device: torch.device | str) -> int | None:
    """Total memory of a CUDA device in bytes, or None for a CPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def language_model(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """Gemma 3's text tower (`model.language_model`), the only part LTX runs."""
    inner = getattr(text_encoder, "model", text_encoder)
    return getattr(inner, "language_model", inner)


class EncoderSwap:
    """Keep weights in pinned host RAM; copy them to the GPU only while a module runs.

    `hook` is the module whose forward triggers the swap, `weights` the modules whose tensors
    move (they may differ: Gemma looks up its token embeddings before entering the text tower,
    so the whole encoder call must be covered). diffusers' group offloading without a stream
    copies weights *back* after every call (24 GB for Gemma), and its streamed mode wants the
    blocks in a top-level ModuleList; here the host copy is kept, so the swap out is free (the
    GPU tensors are just dropped). A few lines, so written here rather than bent from a hook.
    """

    def __init__(
        self, hook: torch.nn.Module, weights: list[torch.nn.Module], device: torch.device | str, pin: bool = True
    ):
        self.device = torch.device(device)
        self.calls = 0
        self._host: list[tuple[torch.Tensor, torch.Tensor]] = []
        seen: set[int] = set()
        for module in weights:
            for tensor in [*module.parameters(), *module.buffers()]:
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                host = tensor.data.to("cpu")
                if pin and torch.cuda.is_available():
                    host = host.pin_memory()  # pinned: the copy in is asynchronous, at full PCIe speed
                tensor.data = host
                self._host.append((tensor, host))
        self._handles = [
            hook.register_forward_pre_hook(self._onload),
            # always_call: a forward that raises (an OOM while encoding) must still drop the GPU
            # copies, or the 22 GiB text tower stays on the card and every later job OOMs too.
            hook.register_forward_hook(self._offload, always_call=True),
        ]

    def _onload(self, module: torch.nn.Module, args: Any) -> None:
        self.calls += 1
        for tensor, host in self._host:
            # copy=True: on a CPU "device" too, so the swap is observable in tests
            tensor.data = host.to(self.device, non_blocking=True, copy=True)

    def _offload(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        for tensor, host in self._host:
            tensor.data = host  # the GPU copy is freed; the caching allocator reuses it

    @property
    def nbytes(self) -> int:
        return sum(host.numel() * host.element_size() for _, host in self._host)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class Execution:
    """A plan applied to one worker's components, and the per-request decisions it makes."""

    plan: str
    device: torch.device
    vram_bytes: int | None
    compiled: bool = False
    actions: list[str] = field(default_factory=list)
    encoder_swaps: list[EncoderSwap] = field(default_factory=list)
    ranks: int = 1  # GPUs one job is split over (context parallelism): activations divide, weights do not

    @property
    def encoder_onloads(self) -> int:
        """How many times Gemma's weights were copied to the GPU (0 with a resident encoder)."""
        return self.encoder_swaps[0].calls if self.encoder_swaps else 0

    def check(self, geometry: Geometry) -> Estimate | None:
        """Refuse (RequestTooLarge) before any work if the job cannot fit; None on a CPU."""
        if self.vram_bytes is None:
            return None
        return memory_plan.check_request(self.plan, geometry, self.vram_bytes, ranks=self.ranks)

    def prepare_decode(self, vae: torch.nn.Module, width: int, height: int) -> bool:
        """Keep diffusers' own VAE tiling off; returns whether the runtime's tiling splits frames at this size.

        The runtime decodes with the reference's tiles and blend (`pipeline.generation.decode`), which
        bound memory at any size; that tiling alone decides the pixels. diffusers' tiling on top
        would re-split and re-blend any tile larger than its own threshold its own way (at its
        default 512 px it happens not to fire on tiles of at most 512 px, but that is luck, not
        design), so it is switched off for every request.
        """
        vae.disable_tiling()
        return memory_plan.needs_vae_tiling(width, height)

    def summary(self) -> str:
        if self.vram_bytes is None:
            return f"execution on {self.device}: {', '.join(self.actions) or 'as loaded'}"
        planned = memory_plan.summary(self.plan, self.vram_bytes, ranks=self.ranks)
        return planned + "\n  applied: " + "; ".join(self.actions)


def choose(device: torch.device | str, requested: str | None = None) -> tuple[str, int | None]:
    """(plan, VRAM bytes): `--plan` if given, else the automatic choice for this device."""
    vram = gpu_total_memory(device)
    if vram is None:
        return (memory_plan.spec(requested).name if requested not in (None, "", "auto") else "resident"), None
    # The host's RAM as this process sees it (a worker sees one GPU; `serve` checks each GPU's share
    # of the host before starting workers: pipeline.engine.gpu_plans).
    share = physical_memory_bytes()
    if share is not None:
        share //= max(torch.cuda.device_count(), 1)
    return memory_plan.resolve_plan(requested, vram, share), vram


def _use_sdpa(name: str, module: torch.nn.Module, actions: list[str]) -> None:
    if name == "text_encoder" and hasattr(module, "set_attn_implementation"):
        module.set_attn_implementation("sdpa")
    elif hasattr(module, "set_attention_backend") and name in ("transformer", "connectors"):
        module.set_attention_backend("native")  # diffusers' dispatcher -> torch SDPA
    else:
        return
    actions.append(f"{name}: SDPA attention")


def _stream_offload(module: torch.nn.Module, device: torch.device, offload_type: str) -> None:
    pin_in_place(module)
    on_gpu = device.type == "cuda"  # streams exist only there; on a CPU (tests) the same hooks run synchronously
    apply_group_offloading(
        module,
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type=offload_type,
        num_blocks_per_group=1 if offload_type == "block_level" else None,
        use_stream=on_gpu,  # prefetch the next group on a side stream while this one computes
        record_stream=on_gpu,  # lets the offload skip a full synchronisation
        low_cpu_mem_usage=False,  # pinned host copies made once, up front: fastest transfers
    )


def _pin(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.pin_memory() if torch.cuda.is_available() else tensor


def pin_in_place(module: torch.nn.Module, pin: Callable[[torch.Tensor], torch.Tensor] = _pin) -> int:
    """Replace each host tensor of `module` by its pinned copy, one tensor at a time; returns the tensors pinned.

    diffusers' group offloading pins every tensor of the model before any pageable copy is
    dropped (a second full copy of the weights at load: ~70 GiB for the `offload` plan); pinned
    here first, each pageable tensor is freed as soon as its pinned copy exists, and diffusers
    finds them pinned already (`Tensor.pin_memory()` of a pinned tensor is the tensor itself).
    Without CUDA there is nothing to pin (`pin` is the identity).
    """
    count = 0
    seen: set[int] = set()
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in seen or tensor.device.type != "cpu":
            continue
        seen.add(id(tensor))
        tensor.data = pin(tensor.data)
        count += 1
    return count


def keep_unmatched_resident(module: torch.nn.Module, device: torch.device) -> torch.nn.Module | None:
    """Keep the layers outside the repeated blocks on the GPU under block-level group offloading.

    diffusers puts a model's non-block layers (here `time_embed`, the adaLN and modulation layers,
    the projections: 0.43B parameters) in one "unmatched" group that is copied to the GPU and
    back on every pass, synchronously. The planner counts them as resident, so they are: the
    group's offload device becomes the GPU, which makes its offload a no-op. Returns the
    group's leader module (None when the model has no such group).
    """
    registry = getattr(module, "_diffusers_hook", None)
    hook = registry.get_hook(_GROUP_OFFLOADING) if registry is not None else None
    if hook is None:
        return None
    group = hook.group
    group.offload_device = device
    group.onload_()  # once: from now on onload and offload move nothing
    return group.onload_leader


def place_component(
    name: str, module: torch.nn.Module, plan: str, device: torch.device | str, actions: list[str] | None = None
) -> torch.nn.Module:
    """Put one freshly loaded (CPU, bf16) component where `plan` wants it; returns it."""
    device = torch.device(device)
    actions = [] if actions is None else actions
    spec = memory_plan.spec(plan)
    _use_sdpa(name, module, actions)
    if name == "text_encoder":
        if hasattr(module, "lm_head"):
            module.lm_head = torch.nn.Identity()
            actions.append("text_encoder: lm_head dropped (hidden states only)")
        lm = language_model(module)
        if spec.text_encoder == "gpu":
            module.to(device)
        elif spec.text_encoder == "swap":
            # The vision tower stays on the host: LTX never feeds Gemma an image.
            module._ltx_swaps = [EncoderSwap(module, [lm], device)]  # kept alive with the module
            actions.append("text_encoder: host RAM, its text tower swapped onto the GPU per encode")
        else:
            # Layer by layer; embeddings and final norm stay on the GPU (they run outside the layers).
            for part in (lm.embed_tokens, lm.norm, getattr(lm, "rotary_emb", None)):
                if part is not None:
                    part.to(device)
            module._ltx_swaps = [EncoderSwap(layer, [layer], device) for layer in lm.layers]
            actions.append("text_encoder: host RAM, streamed onto the GPU one layer at a time")
        return module
    if name == "transformer":
        if spec.transformer == "fp8":
            # Cast to fp8 on the host, then move: the bf16 copy never touches the GPU.
            module.enable_layerwise_casting(storage_dtype=FP8_STORAGE, compute_dtype=COMPUTE_DTYPE,
                                            skip_modules_pattern=FP8_KEEP_BF16)
            module.to(device)
            actions.append("transformer: fp8 storage for the repeated blocks, bf16 compute; the rest bf16")
        elif spec.transformer == "stream":
            pin_in_place(module.transformer_blocks)
            module.enable_group_offload(
                onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                num_blocks_per_group=1, use_stream=device.type == "cuda", record_stream=device.type == "cuda",
                low_cpu_mem_usage=False,
            )
            keep_unmatched_resident(module, device)
            actions.append("transformer: block-level group offload on a CUDA stream; non-block layers resident")
        else:
            module.to(device)
        return module
    if name == "connectors" and spec.connectors == "stream":
        # Its big layers are two input projections outside any ModuleList: leaf level it is.
        _stream_offload(module, device, "leaf_level")
        actions.append("connectors: leaf-level group offload on a CUDA stream")
        return module
    return module.to(device)


def load_device(name: str, plan: str, device: torch.device | str) -> torch.device:
    """Where a loader should create `name`'s tensors so that `place_component` has nothing to copy.

    The GPU for what the plan keeps there in bf16; the host for what it casts to fp8, swaps or
    streams, since those steps start from host tensors (the fp8 cast, the pinned host copies).
    """
    device, host = torch.device(device), torch.device("cpu")
    spec = memory_plan.spec(plan)
    if name == "text_encoder":
        return device if spec.text_encoder == "gpu" else host
    if name == "transformer":
        return device if spec.transformer == "bf16" else host
    if name == "connectors":
        return device if spec.connectors == "gpu" else host
    return device


class Placer:
    """`place(name, module)` for a loader that places each component as it loads.

    `device_for(name)` tells such a loader where to create the tensors in the first place, so
    that a component bound for the GPU goes there tensor by tensor instead of being assembled
    in host RAM first (`pipeline.weights.single_file.load_single_file` asks for it).
    """

    def __init__(self, plan: str, device: torch.device | str, actions: list[str]):
        self.plan, self.device, self.actions = plan, torch.device(device), actions

    def __call__(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        return place_component(name, module, self.plan, self.device, self.actions)

    def device_for(self, name: str) -> torch.device:
        return load_device(name, self.plan, self.device)


def placer(plan: str, device: torch.device | str, actions: list[str]) -> Placer:
    """A `place(name, module)` callback (with `device_for`) for a loader that places as it loads."""
    return Placer(plan, device, actions)


def compile_transformer(transformer: torch.nn.Module, **compile_kwargs: Any) -> bool:
    """Regional torch.compile of the repeated transformer blocks, at most once per module.

    Compiling the 48 identical blocks (one graph, reused) takes a fraction of whole-model
    compilation (reported 20+ min for this transformer) for most of the speed-up.
    """
    if getattr(transformer, _COMPILED_MARK, False):
        return False
    transformer.compile_repeated_blocks(fullgraph=True, **compile_kwargs)
    setattr(transformer, _COMPILED_MARK, True)
    return True


def apply_plan(
    components: Any,
    plan: str | None = None,
    device: torch.device | str = "cuda",
    compile_blocks: bool = False,
    already_placed: bool = False,
    actions: list[str] | None = None,
) -> Execution:
    """Apply `plan` (None/"auto": by measured VRAM) to `components` (a `Components`).

    Components are expected loaded on the CPU in bf16, unless `already_placed` (the loader
    used `placer`). Returns the `Execution` that checks requests and prepares the decode.
    """
    device = torch.device(device)
    chosen, vram = choose(device, plan)
    actions = [] if actions is None else actions
    if not already_placed:
        for name, module in components.modules().items():
            placed = place_component(name, module, chosen, device, actions)
            setattr(components, name, placed)
    swaps = list(getattr(components.text_encoder, "_ltx_swaps", []))
    execution = Execution(chosen, device, vram, actions=actions, encoder_swaps=swaps)
    if compile_blocks:
        blocker = memory_plan.spec(chosen).compile_blocker
        if blocker is not None:
            # Skipped, not refused: `auto` picks these plans on 48 and 24 GB cards, and the
            # worker is still useful uncompiled.
            log.warning("--compile skipped under plan %s: %s", chosen, blocker)
            actions.append(f"transformer: regional compile skipped ({blocker})")
        else:
            execution.compiled = compile_transformer(components.transformer)
            actions.append("transformer: repeated blocks compiled (regional torch.compile)")
    return execution
