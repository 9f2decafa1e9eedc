"""Import cycles in a module graph, for the import-rule tests (standard library's graphlib does the work)."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a -> b -> ... -> a) among `graph`'s modules, or None."""
    inside = {module: {t for t in targets if t in graph and t != module} for module, targets in graph.items()}
    try:
        TopologicalSorter(inside).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None
