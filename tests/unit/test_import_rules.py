"""Import rules of server/ and tools/, checked on the source with `ast` (nothing is imported).

* server/ imports from pipeline only pipeline.engine, pipeline.params, pipeline.errors; tools/
  may also import pipeline.weights (and its modules);
* no import cycles among server/ modules (module-level imports);
* a function-local import must carry a `# deferred:` comment saying why (keep torch out of the
  API process, or avoid loading the model where it is not needed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from import_graph import find_cycle
from repo_paths import REPO

SERVER_ALLOWED = ("pipeline.engine", "pipeline.params", "pipeline.errors")
TOOLS_ALLOWED = (*SERVER_ALLOWED, "pipeline.weights")


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node, node.module))
    return found


def allowed(name: str, rules: tuple[str, ...]) -> bool:
    return not name.startswith("pipeline") or any(name == r or name.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("package", ["server", "tools"])
def test_only_the_pipeline_door_is_imported(package):
    rules = SERVER_ALLOWED if package == "server" else TOOLS_ALLOWED
    bad = []
    for path in modules(package):
        for node, name in imports(ast.parse(path.read_text())):
            if not allowed(name, rules):
                bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not bad, "imports past the pipeline's door:\n" + "\n".join(bad)


def test_no_import_cycles_in_server():
    graph: dict[str, set[str]] = {}
    for path in modules("server"):
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:  # module level only: deferred imports do not run at import time
            for sub, name in imports(node) if isinstance(node, ast.Import | ast.ImportFrom) else []:
                del sub
                if name.startswith("server"):
                    targets.add(name)
                    if isinstance(node, ast.ImportFrom):  # `from server.x import y` may name module y
                        targets |= {f"{name}.{alias.name}" for alias in node.names}
        graph[module_name(path)] = targets
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", ["server", "tools"])
def test_function_local_imports_say_why(package):
    bad = []
    for path in modules(package):
        source = path.read_text()
        lines = source.splitlines()
        for func in ast.walk(ast.parse(source)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    # the marker on the import line, or on a comment line right above it
                    here = lines[node.lineno - 1]
                    above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                    if "# deferred:" not in here and not (above.startswith("#") and "deferred:" in above):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {here.strip()}")
    assert not bad, "function-local imports without a `# deferred:` reason:\n" + "\n".join(sorted(set(bad)))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b", "os"}, "b": set()}) is None
