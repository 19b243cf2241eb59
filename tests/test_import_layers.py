"""The house: imports only point down, and no module imports itself back through others.

Layers, from the bottom (a module may import its own layer and the ones below, never above):

0. foundation: ``errors``, ``registry``, ``config`` (schemas, value domains, generic node checks,
   config locations), ``results`` (Δm maths and the baselines file: pure Python)
1. components: ``data``, ``tasks``, ``models``, ``weighting``
2. ``validation`` (every check before anything is built) and ``report`` (reads run directories)
3. ``build`` (config -> objects)
4. ``train`` (the loop, checkpoints, runs) and ``runs`` (a finished run for eval/predict)
5. ``cli`` (entry points)

Imports inside functions count as much as module-level ones (a lazy import still couples).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mtl_cli"

LAYERS = {
    "mtl_cli.errors": 0,
    "mtl_cli.registry": 0,
    "mtl_cli.config": 0,
    "mtl_cli.results": 0,
    "mtl_cli.data": 1,
    "mtl_cli.tasks": 1,
    "mtl_cli.models": 1,
    "mtl_cli.weighting": 1,
    "mtl_cli.validation": 2,
    "mtl_cli.report": 2,
    "mtl_cli.build": 3,
    "mtl_cli.train": 4,
    "mtl_cli.runs": 4,
    "mtl_cli.cli": 5,
    "mtl_cli": 5,  # the package itself (its __init__)
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def imports_of(module: str) -> dict[str, int]:
    """Every mtl_cli module ``module`` imports (module level or inside functions) -> line."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            candidates = [name] + [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for c in candidates:
            if not c.startswith("mtl_cli"):
                continue
            while c and c not in MODULES:
                c = c.rpartition(".")[0]
            if c and c != module:
                out.setdefault(c, node.lineno)
    return out


def test_every_module_has_a_layer():
    assert len(MODULES) > 50
    for m in MODULES:
        layer(m)  # raises ValueError (max of nothing) for a module outside every layer


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = layer(module)
    upward = {m: line for m, line in imports_of(module).items() if layer(m) > mine}
    assert not upward, f"{module} (layer {mine}) imports higher layers: " + ", ".join(
        f"{m} (layer {layer(m)}, line {line})" for m, line in upward.items()
    )


def test_no_import_cycles():
    graph = {m: set(imports_of(m)) for m in MODULES}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and MODULES[d].name == "__init__.py")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The test would fail on a broken tree: an upward import in a fake component is reported."""
    fake = tmp_path / "mtl_cli" / "weighting"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..train.trainer import Trainer\n")
    monkeypatch.setitem(MODULES, "mtl_cli.weighting.bad", fake / "bad.py")
    assert imports_of("mtl_cli.weighting.bad") == {"mtl_cli.train.trainer": 2}
    with pytest.raises(AssertionError, match="imports higher layers"):
        test_imports_point_down("mtl_cli.weighting.bad")
