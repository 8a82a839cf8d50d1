"""The sweep package has no import circle: no module reaches itself through the imports of
others, counting imports inside functions too (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import capscale.sweep

PACKAGE = Path(capscale.sweep.__file__).parent


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = f"capscale.sweep.{path.stem}"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            deps |= {m for m in mods if m.startswith("capscale.sweep.")}
        graph[name] = deps - {name}
    return graph


def test_no_import_circle_in_the_sweep_package():
    graph = _graph()
    assert {"capscale.sweep.spec", "capscale.sweep.slurm", "capscale.sweep.worker"} <= set(graph)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circle = path[path.index(dep):] + [dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep in graph and dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
