#!/usr/bin/env python3
"""Every third-party package that mtl_cli imports is declared in pyproject.toml.

Each ``.py`` under the package is parsed with :mod:`ast`; every ``import``/``from ... import`` is
collected, at module level and inside functions alike. Standard-library modules
(``sys.stdlib_module_names``), relative imports and the package's own modules are left out. Each
remaining top-level module is mapped to the distribution that provides it
(``importlib.metadata.packages_distributions()``, else a table of known names such as
``yaml`` -> PyYAML, else the module's own name), and that distribution must be declared:

- in ``[project.dependencies]``: any import is fine;
- only in an optional extra (``[project.optional-dependencies]``, following ``mtl-cli[...]``
  references, not counting the test/dev/lint extras): every import of it must be lazy, i.e. inside
  a function, inside the body of a ``try`` whose ``except`` catches ImportError, or under
  ``if TYPE_CHECKING:``; an import that runs when the module is imported would break the core install.

Usage: ``python tools/check_imports.py [--root mtl_cli] [--pyproject pyproject.toml]``. Prints each
problem as ``file:line: ...`` and exits 1; exits 0 when there is none. Stdlib only (tomllib, or
tomli on Python 3.10). :func:`check` returns the problems, for tests.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]

#: import name -> distribution, for when the distribution is not installed here
KNOWN_DISTRIBUTIONS = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "hydra": "hydra-core",
    "google.protobuf": "protobuf",
    "dateutil": "python-dateutil",
}

#: modules of a declared package that need another, optional, distribution when imported
IMPLIED = {
    "torch.utils.tensorboard": "tensorboard",
}

#: extras that are not for users: a runtime import declared only there is undeclared
DEV_EXTRAS = frozenset({"test", "dev", "lint"})

#: exceptions whose ``except`` makes the imports of a ``try`` body optional
IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # the dotted name as written (``PIL.Image``); "" for a file that does not parse
    lazy: bool  # inside a function / try-except ImportError / if TYPE_CHECKING


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    module: str
    distribution: str
    message: str

    def __str__(self) -> str:
        if self.module == "?":
            return f"{self.file}:{self.line}: {self.message}"
        return f"{self.file}:{self.line}: import {self.module}: {self.message}"


def normalize(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``hydra_core`` and ``hydra-core`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _requirement(spec: str) -> tuple[str, list[str]]:
    m = _REQ.match(spec)
    if m is None:
        raise ValueError(f"cannot read the requirement {spec!r}")
    extras = [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]
    return normalize(m.group(1)), extras


@dataclass
class Declared:
    core: set[str]  # normalized distribution names of [project.dependencies]
    extras: dict[str, set[str]]  # user extra -> normalized distributions, references followed

    def extras_of(self, dist: str) -> list[str]:
        return sorted(e for e, dists in self.extras.items() if dist in dists)


def read_declared(pyproject: Path) -> Declared:
    """The distributions that ``pyproject`` declares, core and per user extra."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    name = normalize(project.get("name", ""))
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})

    def resolve(extra: str, seen: set[str]) -> set[str]:
        if extra in seen or extra not in optional:
            return set()
        seen.add(extra)
        out: set[str] = set()
        for spec in optional[extra]:
            dist, refs = _requirement(spec)
            if dist == name:  # mtl-cli[all]: the extras it names
                for ref in refs:
                    out |= resolve(ref, seen)
            else:
                out.add(dist)
        return out

    core = {_requirement(spec)[0] for spec in project.get("dependencies", [])}
    extras = {e: resolve(e, set()) for e in optional if e not in DEV_EXTRAS}
    return Declared(core, extras)


class _Collector(ast.NodeVisitor):
    def __init__(self, file: Path):
        self.file = file
        self.lazy = 0  # depth of function bodies / guarded try bodies / TYPE_CHECKING blocks
        self.found: list[Import] = []

    def _add(self, node: ast.AST, module: str) -> None:
        self.found.append(Import(self.file, node.lineno, module, self.lazy > 0))  # type: ignore[attr-defined]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:  # relative: the package itself
            return
        self._add(node, node.module)
        for alias in node.names:  # from torch.utils import tensorboard
            if f"{node.module}.{alias.name}" in IMPLIED:
                self._add(node, f"{node.module}.{alias.name}")

    def _lazy_visit(self, nodes: list[ast.stmt]) -> None:
        self.lazy += 1
        for n in nodes:
            self.visit(n)
        self.lazy -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:  # run at definition time (imports cannot be in them, though)
            self.visit(d)
        self._lazy_visit(node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Try(self, node: ast.Try) -> None:
        if any(_catches_import_error(h) for h in node.handlers):
            self._lazy_visit(node.body)
        else:
            for n in node.body:
                self.visit(n)
        for other in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(other)

    visit_TryStar = visit_Try

    def visit_If(self, node: ast.If) -> None:
        t = node.test
        if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
            isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
        ):
            self._lazy_visit(node.body)
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:  # bare except
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (isinstance(t, ast.Name) and t.id in IMPORT_ERRORS)
        or (isinstance(t, ast.Attribute) and t.attr in IMPORT_ERRORS)
        for t in types
    )


def collect_imports(root: Path) -> Iterator[Import]:
    """Every absolute import in the .py files under ``root``, in file and line order; a file that
    does not parse gives one Import with an empty module name (at the error's line)."""
    for file in sorted(root.rglob("*.py")):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        except SyntaxError as e:
            yield Import(file, e.lineno or 1, "", False)
            continue
        c = _Collector(file)
        c.visit(tree)
        yield from c.found


def distributions_of(module: str, installed: Mapping[str, list[str]] | None = None) -> list[str]:
    """The distributions that may provide the top-level package of ``module``: the installed ones,
    else the known name, else the module's own name."""
    installed = importlib.metadata.packages_distributions() if installed is None else installed
    top = module.split(".")[0]
    return list(installed.get(top) or [KNOWN_DISTRIBUTIONS.get(module) or KNOWN_DISTRIBUTIONS.get(top) or top])


def check(root: Path = REPO / "mtl_cli", pyproject: Path = REPO / "pyproject.toml") -> list[Problem]:
    """The imports under ``root`` whose distribution ``pyproject`` does not declare (as needed)."""
    root, pyproject = root.resolve(), pyproject.resolve()
    own = root.name
    declared = read_declared(pyproject)
    installed = importlib.metadata.packages_distributions()
    problems: list[Problem] = []

    for imp in collect_imports(root):
        where = imp.file.relative_to(root.parent).as_posix()
        if not imp.module:
            problems.append(Problem(where, imp.line, "?", "", "the file does not parse (SyntaxError)"))
            continue
        top = imp.module.split(".")[0]
        if top in sys.stdlib_module_names or top == own:
            continue
        needs = [distributions_of(imp.module, installed)]
        needs += [[d] for prefix, d in IMPLIED.items() if (imp.module + ".").startswith(prefix + ".")]
        for dists in needs:
            if any(normalize(d) in declared.core for d in dists):
                continue
            extras = sorted({e for d in dists for e in declared.extras_of(normalize(d))})
            if extras and imp.lazy:
                continue
            if extras:
                msg = (
                    f"runs at import time, but {dists[0]} is only in the optional extra(s) {', '.join(extras)}: "
                    "import it inside a function or a try/except ImportError, or declare it in [project.dependencies]"
                )
            else:
                where_to = (
                    "[project.dependencies] (or an optional extra, if optional)"
                    if imp.lazy
                    else "[project.dependencies]"
                )
                msg = f"distribution {dists[0]} is not declared in {pyproject.name}: add it to {where_to}"
            problems.append(Problem(where, imp.line, imp.module, dists[0], msg))
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO / "mtl_cli", help="the package directory to scan")
    ap.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    args = ap.parse_args(argv)
    problems = check(args.root, args.pyproject)
    for p in problems:
        print(p)
    if problems:
        print(f"check_imports: {len(problems)} import(s) of undeclared packages", file=sys.stderr)
        return 1
    print(f"check_imports: every third-party import under {args.root.name}/ is declared in {args.pyproject.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
