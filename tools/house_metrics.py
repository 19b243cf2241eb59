"""Sizes and shape of the package at two git revisions, for docs/architecture.md.

    python tools/house_metrics.py --before 74db6c4 --after HEAD

Measures, on mtl_cli/ at each revision: files and lines; the largest files; import cycles
(strongly connected components of the module graph, lazy imports included); imports that point
up the layers of tests/test_import_layers.py; gradient methods whose ``__init__`` repeats the
engine's keys; loss methods that define their own ``backward``; files ``ruff format`` would change
(when ruff is installed). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    "mtl_cli": 5,
}
ENGINE_KEYS = {"source", "grouping", "every", "mode", "chunk_size"}


def export(rev: str, dest: Path) -> Path:
    """The tree of ``rev`` (mtl_cli/ and pyproject.toml) unpacked into ``dest``."""
    archive = subprocess.run(
        ["git", "archive", rev, "mtl_cli", "pyproject.toml"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for f in (root / "mtl_cli").rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(mods: dict[str, Path], module: str) -> set[str]:
    path = mods[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            cands = [name] + [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        for c in cands:
            if not c.startswith("mtl_cli"):
                continue
            while c and c not in mods:
                c = c.rpartition(".")[0]
            if c and c != module:
                out.add(c)
    return out


def layer(module: str) -> int:
    return LAYERS[max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def init_params(fn: ast.FunctionDef) -> set[str]:
    a = fn.args
    return {x.arg for x in a.args + a.kwonlyargs}


def measure(root: Path) -> dict:
    mods = modules(root)
    graph = {m: imports(mods, m) for m in mods}
    for m in graph:  # a package __init__ re-exporting its submodules is not a cycle
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and mods[d].name == "__init__.py")}
    lines = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
    upward = sorted((m, d) for m, ds in graph.items() for d in ds if layer(d) > layer(m))
    engine_repeats, own_backward, own_weighted = [], [], []
    for m, p in mods.items():
        if not m.startswith("mtl_cli.weighting.") or m.endswith(("engine", "base", "_qp")):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    if len(init_params(item) & ENGINE_KEYS) >= 4:
                        engine_repeats.append(f"{m}.{node.name}")
                if isinstance(item, ast.FunctionDef) and item.name == "backward":
                    own_backward.append(f"{m}.{node.name}")
                if isinstance(item, ast.FunctionDef) and item.name == "weighted_backward":
                    own_weighted.append(f"{m}.{node.name}")
    fmt = None
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if Path(ruff).exists():
        cfg = root / "pyproject.toml"
        r = subprocess.run(
            [ruff, "format", "--check", "--diff", "--config", str(cfg), str(root / "mtl_cli")],
            capture_output=True,
            text=True,
        )
        fmt = sum(1 for line in r.stdout.splitlines() if line.startswith("+++ "))
    return {
        "files": len(mods),
        "lines": sum(lines.values()),
        "largest": sorted(lines.items(), key=lambda kv: -kv[1])[:6],
        "lines_of": lines,
        "cycles": cycles(graph),
        "upward": upward,
        "engine_repeats": engine_repeats,
        "own_backward": own_backward,
        "own_weighted": own_weighted,
        "format": fmt,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--modules", nargs="*", default=[], help="modules whose line counts to show side by side")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        before, after = measure(export(args.before, Path(a))), measure(export(args.after, Path(b)))
    rows = [
        ("python files in mtl_cli/", before["files"], after["files"]),
        ("lines in mtl_cli/", before["lines"], after["lines"]),
        ("import cycles (modules in them)", _cyc(before), _cyc(after)),
        ("imports pointing up the layers", len(before["upward"]), len(after["upward"])),
        ("gradient methods repeating the engine's keys", len(before["engine_repeats"]), len(after["engine_repeats"])),
        ("weighting classes with their own backward()", len(before["own_backward"]), len(after["own_backward"])),
        (
            "weighting classes overriding weighted_backward() (state updates, engines)",
            len(before["own_weighted"]),
            len(after["own_weighted"]),
        ),
        ("files ruff format would change", before["format"], after["format"]),
        ("largest file (lines)", _big(before), _big(after)),
    ]
    for m in args.modules:
        rows.append((f"`{m}` (lines)", before["lines_of"].get(m, "-"), after["lines_of"].get(m, "-")))
    print(f"| measure | before ({args.before}) | after ({args.after}) |")
    print("|---|---|---|")
    for name, x, y in rows:
        print(f"| {name} | {x} | {y} |")
    if after["upward"]:
        print("\nupward imports after:", ", ".join(f"{m} -> {d}" for m, d in after["upward"]))
    return 0


def _cyc(m: dict) -> str:
    return f"{len(m['cycles'])} ({sum(len(c) for c in m['cycles'])})"


def _big(m: dict) -> str:
    name, n = m["largest"][0]
    return f"{n} ({name.removeprefix('mtl_cli.')})"


if __name__ == "__main__":
    raise SystemExit(main())
