"""Context parallelism for the LTX-2.3 transformer: one job's video tokens split over N ranks.

Built on diffusers' context parallelism (`ContextParallelConfig`, the `ContextParallelSplitHook`
/ gather hooks of `diffusers.hooks.context_parallel`, Ulysses attention in the native SDPA
backend of `attention_dispatch`); this module fills only what diffusers 0.42.1 leaves open for
LTX-2.3 (see ARCHITECTURE.md "Many GPUs" for the findings in full):

* `enable_parallelism` places rank r on `accelerator:(r % accelerator count)`, which divides by
  zero without an accelerator, and builds its own mesh; here the mesh is built from the process
  group already running (CPU/gloo or CUDA/NCCL) and the library's hooks are attached with
  `apply_context_parallel`, as `enable_parallelism` does.
* The declared `_cp_plan` splits `hidden_states` but not the per-token `timestep` (the
  conditioned first frame has its own), expects 3-dim RoPE tensors (LTX-2.3's "split" RoPE is
  (B, H, T, D/2): left unsplit with a warning) and leaves the audio↔video RoPE whole; it also
  splits the text tokens, whose padding mask Ulysses cannot carry (the mask keeps all heads
  while attention runs on H/N). Our plan (`cp_plan`) splits the video tokens, their per-token
  timestep and their RoPE coordinates (so every RoPE table is computed for local tokens only),
  and keeps text and audio whole on every rank.
* Which attentions communicate: only those whose keys are video tokens. Video self-attention
  and video→audio cross-attention (queries: the audio, whole on every rank; keys: the split
  video) run Ulysses (all-to-all over heads); text cross-attention, audio self-attention and
  audio→video cross-attention (video queries, audio keys) are exact locally and run plain
  SDPA. Audio is a few hundred tokens against tens of thousands of video tokens: computing it
  on every rank costs less than splitting it.
* Token counts that do not divide N: the library's "Ulysses anything" mode (uneven all-to-all,
  which gloo and NCCL both support); its final gather uses an uneven `all_gather` that gloo
  refuses, so the output is gathered here by padding each rank's share to the largest and
  trimming (`gather_tokens`). Ring attention needs the attention's log-sum-exp, which the
  native SDPA backend does not return: it is not used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.context_parallel import apply_context_parallel
from diffusers.models._modeling_parallel import (
    ContextParallelConfig,
    ContextParallelInput,
    ParallelConfig,
)
from torch.distributed.device_mesh import DeviceMesh

# The attentions whose keys are video tokens (split over the ranks): they communicate.
COMMUNICATING_ATTENTIONS = ("attn1", "video_to_audio_attn")
# Every other attention in a block sees whole keys on every rank and runs locally.
LOCAL_ATTENTIONS = ("attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn")
_GATHER_HOOK = "ltx_cp_gather_video"
RENDEZVOUS_SECONDS = 600.0


def cp_plan() -> dict[str, Any]:
    """The split plan for `LTX2VideoTransformer3DModel` as the runtime calls it.

    Applied at the model's entry: the video tokens (B, T, C), their per-token timestep (B, T)
    and their RoPE coordinates (B, 3, T, 2). Only arguments the runtime passes by keyword may
    be named (the library's hook looks others up by position and fails): a per-token input added
    later (e.g. `video_keyframes_mask`) must be added here. The output is gathered by
    `GatherVideoHook` on `proj_out` rather than by the library's gather.
    """
    return {
        "": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3),
            "timestep": ContextParallelInput(split_dim=1, expected_dims=2),
            "video_coords": ContextParallelInput(split_dim=2, expected_dims=4),
        },
    }


def split_sizes(tokens: int, ranks: int) -> list[int]:
    """Tokens per rank as `torch.tensor_split` (the library's uneven sharder) divides them."""
    base, extra = divmod(tokens, ranks)
    return [base + (1 if rank < extra else 0) for rank in range(ranks)]


def ulysses_mode(tokens: int, heads: tuple[int, ...], ranks: int) -> str:
    """"ulysses" when every split divides evenly, else "ulysses-anything" (the library's uneven mode)."""
    if tokens % ranks == 0 and all(h % ranks == 0 for h in heads):
        return "ulysses"
    return "ulysses-anything"


def check_degree(heads: tuple[int, ...], ranks: int) -> None:
    """Refuse a split Ulysses cannot do: fewer attention heads than ranks.

    Ulysses gives each rank a share of the heads; even its uneven mode pads heads only up to
    one per rank (diffusers asserts it). Ring attention would not need heads, but it needs the
    attention's log-sum-exp, which the native SDPA backend does not return. LTX-2.3 has 32 video
    and 32 audio heads: up to 32 ranks.
    """
    if ranks < 2:
        raise ValueError("context parallelism needs at least 2 ranks")
    if min(heads) < ranks:
        raise ValueError(f"cannot split a job over {ranks} ranks: the transformer has {min(heads)} attention heads "
                         f"(Ulysses needs at least one head per rank)")


def gather_tokens(local: torch.Tensor, sizes: list[int], group: dist.ProcessGroup | None) -> torch.Tensor:
    """All ranks' token shares (dim 1), concatenated in rank order; shares may be uneven.

    Each share is padded to the largest before an equal-size `all_gather` (gloo has no uneven
    all-gather), then trimmed: one collective, the same on gloo and NCCL.
    """
    largest = max(sizes)
    padded = local
    if local.shape[1] < largest:
        pad = local.new_zeros((local.shape[0], largest - local.shape[1], *local.shape[2:]))
        padded = torch.cat([local, pad], dim=1)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous(), group=group)
    return torch.cat([part[:, :size] for part, size in zip(parts, sizes, strict=True)], dim=1)


class GatherVideoHook(ModelHook):
    """After `proj_out`: every rank gets the whole video output (uneven shares allowed)."""

    def __init__(self, group: dist.ProcessGroup, ranks: int):
        super().__init__()
        self.group = group
        self.ranks = ranks

        self.tokens: int | None = None  # the pass's video token count, set by `ContextParallel.prepare_pass`

    def post_forward(self, module: torch.nn.Module, output: torch.Tensor) -> torch.Tensor:
        if self.tokens is None:
            raise RuntimeError("ContextParallel.prepare_pass was not called before the transformer pass")
        # The shares follow from tensor_split arithmetic: no collective needed to learn them.
        return gather_tokens(output, split_sizes(self.tokens, self.ranks), self.group)


@dataclass
class ContextParallel:
    """A transformer split over the ranks of `group`: what one pass needs set, and the facts for logs."""

    transformer: torch.nn.Module
    group: dist.ProcessGroup
    ranks: int
    config: ContextParallelConfig
    gather: GatherVideoHook

    def prepare_pass(self, video_tokens: int) -> str:
        """Choose the mode for a pass over `video_tokens` tokens (even Ulysses or the uneven mode)."""
        heads = (self.transformer.config.num_attention_heads, self.transformer.config.audio_num_attention_heads)
        mode = ulysses_mode(video_tokens, heads, self.ranks)
        # The config object is shared by the split hook and every communicating processor, and
        # read at call time: setting it here switches the whole pass.
        self.config.ulysses_anything = mode == "ulysses-anything"
        self.gather.tokens = video_tokens
        return mode

    def describe(self) -> str:
        """One line for the worker's log."""
        return (f"context parallel over {self.ranks} ranks ({dist.get_backend(self.group)}): Ulysses on "
                f"{', '.join(COMMUNICATING_ATTENTIONS)}; video tokens split, text and audio whole on every rank")


def enable_context_parallel(transformer: torch.nn.Module, group: dist.ProcessGroup | None = None) -> ContextParallel:
    """Split `transformer`'s video tokens over the ranks of `group` (default: the whole world).

    The process group must be running. Each rank keeps a full copy of the weights; attention
    runs through diffusers' native SDPA backend, which supports context parallelism.
    """
    group = group or dist.group.WORLD
    ranks = dist.get_world_size(group)
    rank = dist.get_rank(group)
    config_heads = (transformer.config.num_attention_heads, transformer.config.audio_num_attention_heads)
    check_degree(config_heads, ranks)
    device = next(transformer.parameters()).device
    global_ranks = dist.get_process_group_ranks(group)
    mesh = _mesh(device.type, global_ranks)
    config = ContextParallelConfig(ulysses_degree=ranks, mesh=mesh)
    parallel = ParallelConfig(context_parallel_config=config)
    parallel.setup(rank, ranks, device, mesh=mesh)
    for block in transformer.transformer_blocks:
        for name in COMMUNICATING_ATTENTIONS:
            getattr(block, name).processor._parallel_config = parallel
    apply_context_parallel(transformer, config, cp_plan())
    gather = GatherVideoHook(group, ranks)
    HookRegistry.check_if_exists_or_initialize(transformer.proj_out).register_hook(gather, _GATHER_HOOK)
    return ContextParallel(transformer, group, ranks, config, gather)


def _mesh(device_type: str, global_ranks: list[int]) -> DeviceMesh:
    """A (ring=1, ulysses=N) mesh over the running process group's ranks."""
    return DeviceMesh(device_type, torch.tensor(global_ranks).view(1, len(global_ranks)),
                      mesh_dim_names=("ring", "ulysses"))


def init_group(rank: int, size: int, address: str, device_type: str, timeout_s: float) -> dist.Store:
    """Join the job group: a TCP store served by rank 0 at `address` (host:port), NCCL on CUDA, gloo on the CPU.

    Every collective times out after `timeout_s` (no rank waits forever on a dead peer). Returns
    a store for the group's own keys (the leader's job announcements).
    """
    host, _, port = address.rpartition(":")
    timeout = timedelta(seconds=timeout_s)
    # Meeting waits for the slowest rank to start and load: a longer wait than a collective's.
    meeting = timedelta(seconds=max(timeout_s, RENDEZVOUS_SECONDS))
    if device_type == "cpu":
        # N ranks on one CPU: each takes its share of the cores. Oversubscribed, gloo's waits and
        # torch's thread pools fight (a tiny job went from 1.2 s to 14-19 s with 2 threads per rank on 2 cores).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    store = dist.TCPStore(host, int(port), size, is_master=rank == 0, timeout=meeting)
    _meet(dist.PrefixStore("meet/", store), size, meeting.total_seconds())
    backend = "nccl" if device_type == "cuda" else "gloo"
    options: dict[str, Any] = {}
    if device_type == "cuda":
        torch.cuda.set_device(rank % max(1, torch.cuda.device_count()))
        options["device_id"] = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group(backend, store=dist.PrefixStore("pg/", store), rank=rank, world_size=size,
                            timeout=timeout, **options)
    return dist.PrefixStore("ltx/", store)


def _meet(store: dist.Store, size: int, timeout_s: float) -> None:
    """Wait (up to `timeout_s`) until every rank has arrived, so process-group set-up starts together."""
    store.add("arrived", 1)
    deadline = time.monotonic() + timeout_s
    while store.add("arrived", 0) < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {store.add('arrived', 0)} of {size} ranks arrived in {timeout_s:.0f} s")
        time.sleep(0.05)
