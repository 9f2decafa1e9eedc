"""Keeping the garbage collector's full passes short in long-lived processes."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, the app, a loaded model) out of the collector's reach.

    A full (generation 2) collection walks every tracked object. What exists once a process has
    started lives as long as the process, so walking it frees nothing, yet it made each full pass a
    pause: about 90 ms in the API process (every request arriving meanwhile waits: the status-read
    p99 of `bench/load.py`) and about 300 ms, once a second, in a worker generating on the CPU. After
    `gc.freeze()` a full pass walks only what was allocated since (CPython's documented use of it).
    """
    gc.collect()
    gc.freeze()
