"""This host's physical memory, as the memory planner's host-RAM check needs it (stdlib only, no torch).

A container's memory limit (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`) counts when it
is lower than the machine's RAM: that is where an over-committed load gets killed.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def physical_memory_bytes(cgroup_limits: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """Bytes of RAM this process may use at most: the machine's, or its container's limit if lower; None if unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for path in cgroup_limits:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means no limit; v1 writes a huge number instead
            total = min(total, int(text))
    return total
