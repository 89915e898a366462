"""The package's shape: no import circle, nothing imported from research/ or benchmarks/, the camera solver on its own,
no path into the repository, small modules."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "pensieve_ns"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """Every module of the package -> the modules it imports (at the top or inside functions), absolute names."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:  # relative import
                    package = name.split(".")[: -node.level if path.name != "__init__.py" else len(name.split("."))]
                    base = ".".join(package + [node.module])
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name} | {m for m in found if m.split(".")[0] in ("research", "benchmarks")}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_and_no_research_imports():
    graph = import_graph()
    assert len(graph) > 40
    assert cycles(graph) == []
    # a planted circle is found (the check can fail)
    assert cycles({**graph, "pensieve_ns.cameras": graph["pensieve_ns.cameras"] | {"pensieve_ns.losses"}})
    assert not [(m, d) for m, deps in graph.items() for d in deps if d.split(".")[0] in ("research", "benchmarks")]


def test_camera_solver_is_its_own_subpackage():
    """``pensieve_ns.sfm`` (pensieve-cameras) uses frame reading and scene writing, never the model."""
    graph = import_graph()
    outside = {d for m, deps in graph.items() if m.startswith("pensieve_ns.sfm") for d in deps if not d.startswith("pensieve_ns.sfm")}
    assert outside and not {d for d in outside if d.startswith(("pensieve_ns.model", "pensieve_ns.render", "pensieve_ns.eval"))}, outside


def test_the_package_never_opens_a_path_of_the_repository_and_modules_stay_small():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "__file__" not in text, f"{path}: locates files relative to the package (a wheel has no repository)"
        assert len(text.splitlines()) <= 400, f"{path}: over 400 lines"
