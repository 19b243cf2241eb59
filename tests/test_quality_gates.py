"""The quality gates of CI (docs/quality.md): tools/check_imports.py, tools/mypy_baseline.py, ruff format.

Fast: mypy itself only runs in the slow test."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check_imports = _load("check_imports")
mypy_baseline = _load("mypy_baseline")


# --- check_imports ---------------------------------------------------------------------------------


def test_every_import_of_the_tree_is_declared():
    problems = check_imports.check()
    assert problems == [], "\n".join(map(str, problems))


FAKE_PYPROJECT = """
[project]
name = "fakepkg"
dependencies = ["torch>=2", "PyYAML"]

[project.optional-dependencies]
plots = ["matplotlib"]
all = ["fakepkg[plots]"]
test = ["pytest", "numpy"]  # a test extra declares nothing for the package
"""


def _fake_tree(tmp_path: Path, files: dict[str, str], pyproject: str = FAKE_PYPROJECT) -> tuple[Path, Path]:
    root = tmp_path / "fakepkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "pyproject.toml").write_text(pyproject)
    return root, tmp_path / "pyproject.toml"


def test_undeclared_imports_are_flagged(tmp_path):
    root, pyproject = _fake_tree(
        tmp_path,
        {
            "__init__.py": """
                import os
                import yaml
                import torch.nn as nn
                from . import sub
                from fakepkg.sub import f
                import requests_unknown_pkg
                """,
            "sub/__init__.py": """
                def f():
                    import numpy as np  # lazy, but only the test extra has numpy
                    from PIL import Image  # lazy, declared nowhere
                    return np, Image
                """,
        },
    )
    problems = check_imports.check(root, pyproject)
    found = {(p.file, p.line, p.module) for p in problems}
    assert found == {
        ("fakepkg/__init__.py", 7, "requests_unknown_pkg"),
        ("fakepkg/sub/__init__.py", 3, "numpy"),
        ("fakepkg/sub/__init__.py", 4, "PIL"),
    }
    pil = next(p for p in problems if p.module == "PIL")
    assert pil.distribution.lower() == "pillow" and "not declared" in pil.message
    assert str(pil).startswith("fakepkg/sub/__init__.py:4: import PIL:")


def test_an_extra_needs_a_lazy_or_guarded_import(tmp_path):
    root, pyproject = _fake_tree(
        tmp_path,
        {
            "eager.py": "import matplotlib\n",
            "lazy.py": "def plot():\n    import matplotlib.pyplot as plt\n    return plt\n",
            "guarded.py": "try:\n    import matplotlib\nexcept ImportError:\n    matplotlib = None\n",
            "typing_only.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import matplotlib\n",
            "tb.py": "from torch.utils.tensorboard import SummaryWriter\n",  # needs tensorboard, in no extra
        },
    )
    problems = check_imports.check(root, pyproject)
    assert {(p.file, p.module) for p in problems} == {
        ("fakepkg/eager.py", "matplotlib"),
        ("fakepkg/tb.py", "torch.utils.tensorboard"),
    }
    eager = next(p for p in problems if p.file == "fakepkg/eager.py")
    assert "only in the optional extra(s) all, plots" in eager.message


def test_check_imports_cli_exit_codes(tmp_path, capsys):
    root, pyproject = _fake_tree(tmp_path, {"a.py": "import yaml\nimport not_a_declared_pkg\n"})
    assert check_imports.main(["--root", str(root), "--pyproject", str(pyproject)]) == 1
    assert "fakepkg/a.py:2: import not_a_declared_pkg" in capsys.readouterr().out
    (root / "a.py").write_text("import yaml\n")
    assert check_imports.main(["--root", str(root), "--pyproject", str(pyproject)]) == 0


def test_a_file_that_does_not_parse_is_a_problem(tmp_path):
    root, pyproject = _fake_tree(tmp_path, {"broken.py": "def f(:\n"})
    assert [p.file for p in check_imports.check(root, pyproject)] == ["fakepkg/broken.py"]


def test_the_repo_declares_the_imported_packages():
    declared = check_imports.read_declared(REPO / "pyproject.toml")
    assert {"pyyaml", "numpy", "pillow"} <= declared.core
    assert "pyarrow" in declared.extras["parquet"] and "pyarrow" in declared.extras["all"]
    assert "test" not in declared.extras and "lint" not in declared.extras


# --- mypy baseline ---------------------------------------------------------------------------------

MYPY_OUTPUT = """\
mtl_cli/a.py:3: error: Incompatible types in assignment  [assignment]
mtl_cli/a.py:9:5: error: Argument 1 has incompatible type "int"; expected "str"  [arg-type]
mtl_cli/a.py:9: note: this is a note, not an error
mtl_cli/b.py:1: error: Something without a code
mtl_cli/a.py:12: error: Item "None" of "X | None" has no attribute "y"  [union-attr]
Found 4 errors in 2 files (checked 2 source files)
"""


def test_parse_counts_errors_per_file_and_code():
    counts = mypy_baseline.parse(MYPY_OUTPUT)
    assert counts == {
        "mtl_cli/a.py": Counter({"assignment": 1, "arg-type": 1, "union-attr": 1}),
        "mtl_cli/b.py": Counter({"unknown": 1}),
    }
    assert mypy_baseline.totals(counts) == {"mtl_cli/a.py": 3, "mtl_cli/b.py": 1}


def test_compare_refuses_an_increase_and_accepts_a_decrease():
    baseline = {"a.py": 5, "b.py": 2, "gone.py": 1}
    up = mypy_baseline.compare(baseline, {"a.py": 6, "b.py": 2, "new.py": 1})
    assert not up.ok and up.up == {"a.py": (5, 6), "new.py": (0, 1)} and up.down == {"gone.py": (1, 0)}
    down = mypy_baseline.compare(baseline, {"a.py": 3, "b.py": 2})
    assert down.ok and down.up == {} and down.down == {"a.py": (5, 3), "gone.py": (1, 0)}
    assert mypy_baseline.compare(baseline, baseline).ok


def test_update_lowers_but_does_not_raise_the_baseline():
    doc = mypy_baseline.document({"a.py": Counter({"arg-type": 3}), "b.py": Counter({"index": 1})}, "2.4.1")
    assert doc["total"] == 4 and doc["files"]["a.py"] == {"total": 3, "codes": {"arg-type": 3}}

    lower = mypy_baseline.updated(doc, {"a.py": Counter({"arg-type": 1, "misc": 1})}, "2.4.1")
    assert lower["total"] == 2 and list(lower["files"]) == ["a.py"]

    higher = {"a.py": Counter({"arg-type": 3}), "b.py": Counter({"index": 2})}
    with pytest.raises(mypy_baseline.IncreaseRefused) as e:
        mypy_baseline.updated(doc, higher, "2.4.1")
    assert e.value.diff.up == {"b.py": (1, 2)}
    assert mypy_baseline.updated(doc, higher, "2.4.1", allow_increase=True)["total"] == 5


def test_baseline_cli_from_mypy_output(tmp_path, capsys):
    baseline, output = tmp_path / "baseline.json", tmp_path / "mypy.txt"
    output.write_text(MYPY_OUTPUT)
    args = ["--baseline", str(baseline), "--output", str(output)]
    assert mypy_baseline.main(args) == 1  # no baseline yet
    assert mypy_baseline.main([*args, "--update"]) == 0  # the first baseline
    assert json.loads(baseline.read_text())["total"] == 4
    assert mypy_baseline.main(args) == 0

    output.write_text(MYPY_OUTPUT.replace("mtl_cli/b.py", "mtl_cli/a.py"))  # same total, a.py 3 -> 4
    capsys.readouterr()
    assert mypy_baseline.main(args) == 1
    assert "mtl_cli/a.py: 3 -> 4" in capsys.readouterr().out
    assert mypy_baseline.main([*args, "--update"]) == 1  # refused
    assert json.loads(baseline.read_text())["files"]["mtl_cli/a.py"]["total"] == 3

    output.write_text(MYPY_OUTPUT.splitlines()[0] + "\n")  # a.py 3 -> 1, b.py 1 -> 0
    assert mypy_baseline.main(args) == 0
    assert "--update" in capsys.readouterr().out
    assert mypy_baseline.main([*args, "--update"]) == 0
    assert json.loads(baseline.read_text())["files"] == {"mtl_cli/a.py": {"total": 1, "codes": {"assignment": 1}}}


def test_the_committed_baseline_is_consistent():
    doc = json.loads((REPO / "tools" / "mypy-baseline.json").read_text())
    assert doc["total"] == sum(f["total"] for f in doc["files"].values()) == sum(doc["codes"].values())
    assert all(f["total"] == sum(f["codes"].values()) for f in doc["files"].values())


@pytest.mark.slow
def test_mypy_is_within_the_baseline():
    pytest.importorskip("mypy", reason='mypy is not installed: pip install -e ".[lint]"')
    proc = subprocess.run(
        [sys.executable, "tools/mypy_baseline.py"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- ruff format -----------------------------------------------------------------------------------


def test_the_tree_is_ruff_formatted():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip('ruff is not installed: pip install -e ".[lint]"')
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
