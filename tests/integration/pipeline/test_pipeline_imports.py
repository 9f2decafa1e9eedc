"""Import rules of pipeline/, checked on the source with `ast`, and the light modules checked for real.

* no import cycles among pipeline/ modules, function-local imports included;
* a function-local import only in a light module (one the API process imports), or of an
  optional dependency (OPTIONAL), marked `# deferred:` with its reason;
* the light modules import no torch, diffusers nor transformers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from import_graph import find_cycle
from repo_paths import REPO

LIGHT = (
    "pipeline.engine", "pipeline.params", "pipeline.errors", "pipeline.geometry", "pipeline.placement.plan",
    "pipeline.generation.image", "pipeline.weights.lock", "pipeline.weights.checkpoint_config",
)
HEAVY = ("torch", "diffusers", "transformers")
# Optional dependencies a heavy module may still import late (marked `# deferred:`): the GPU check's
# bare device image has no PyAV, and only the start image's H.264 round trip needs it.
OPTIONAL = ("av",)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(tree: ast.AST) -> list[tuple[ast.AST, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.append((node, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node, [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]))
    return found


def test_no_import_cycles_in_pipeline_even_through_deferred_imports():
    modules = _modules()
    graph = {
        name: {t for _, targets in _imports(ast.parse(path.read_text())) for t in targets if t in modules and t != name}
        for name, path in modules.items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_function_local_imports_only_keep_heavy_modules_out_of_light_ones():
    bad = []
    for name, path in _modules().items():
        source = path.read_text()
        lines = source.splitlines()
        for func in ast.walk(ast.parse(source)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node, targets in _imports(func):
                here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                marked = "# deferred:" in here or (above.startswith("#") and "deferred:" in above)
                optional = all(target.split(".")[0] in OPTIONAL for target in targets)
                if not marked or (name not in LIGHT and not optional):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {here.strip()}")
    assert not bad, "function-local imports outside the light modules or without `# deferred:`:\n" + "\n".join(bad)


def test_the_light_modules_import_no_torch():
    code = f"import sys; import {', '.join(LIGHT)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
