"""Peak bytes of the tensors a piece of torch code allocates, on any device (the meta device too).

What `torch.cuda.max_memory_allocated()` reports on a GPU, without a GPU: every tensor an op
returns is accounted by its storage; a storage counts from the op that created it until the
last tensor viewing it is gone; tensors that existed before (weights, inputs) and their views
cost nothing. On the meta device this measures the real model at its real widths in
milliseconds, with no memory, which is how the planner's activation constants are backed
(tests/unit/pipeline/test_memory_constants.py).

Attention is the one place where the kernel matters: on a GPU SDPA runs flash / memory-efficient
kernels that never hold the (queries x keys) score matrix, while the CPU and meta fall back to
the math path, which does. `flash_sdpa=True` replaces SDPA by its output allocation alone (plus
the per-query log-sum-exp a flash kernel writes), which is what the GPU allocator sees.

Hand-written because no library measures allocations on the meta device: torch's CPU profiler
records only real allocations, and FakeTensorMode does not track lifetimes.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _FlashAttention(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query = args[0] if args else kwargs["query"]
            value = args[2] if len(args) > 2 else kwargs["value"]
            out_shape = (*query.shape[:-1], value.shape[-1])
            out = torch.empty(out_shape, dtype=query.dtype, device=query.device)
            torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)  # log-sum-exp, freed at once
            return out
        return func(*args, **kwargs)


class TensorMemory(TorchDispatchMode):
    """`with TensorMemory() as mem: ...`; then `mem.peak` (bytes) and `mem.live` (still held at the end)."""

    def __init__(self, flash_sdpa: bool = True):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._bytes: dict[int, int] = {}  # storage key -> bytes, for storages created inside
        self._refs: dict[int, int] = {}  # storage key -> tensors alive that view it
        self._flash = _FlashAttention() if flash_sdpa else None

    def __enter__(self) -> TensorMemory:
        if self._flash is not None:
            self._flash.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self._flash is not None:
            self._flash.__exit__(*exc)

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, inputs)
        return out

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        key = _key(tensor)
        if key not in self._bytes:
            if key in inputs:
                return  # a view of (or in place on) a tensor from outside: not an allocation
            self._bytes[key] = tensor.untyped_storage().nbytes()
            self._refs[key] = 0
            self.live += self._bytes[key]
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.live -= self._bytes.pop(key)
            del self._refs[key]


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata
