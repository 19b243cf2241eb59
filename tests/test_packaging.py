"""The wheel ships the built-in configs, and an installed (non-editable) copy finds and uses them.

Slow (a wheel build): run with ``pytest -m slow tests/test_packaging.py``. The build runs on a copy
of the sources in a temporary directory, so it writes no build/ or egg-info into the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

pytestmark = pytest.mark.slow


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, f"{args} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("mtl_cli", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    out = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)])
    wheels = list(out.glob("mtl_cli-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


def test_wheel_contains_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"mtl_cli/{p.relative_to(ROOT / 'mtl_cli').as_posix()}" for p in (ROOT / "mtl_cli").rglob("*.py")}
    assert not sorted(expected - names), "modules missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mtl-train = mtl_cli.cli.train:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_contains_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"mtl_cli/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")}
    assert len(expected) > 40 and "mtl_cli/conf/train.yaml" in expected
    missing = sorted(expected - names)
    assert not missing, f"configs missing from the wheel: {missing}"


def test_installed_wheel_uses_its_packaged_configs(wheel, tmp_path):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing to find by relative paths
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_CONFIG_DIR", "MTL_DEBUG", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(site)  # before the .venv's site-packages (and its editable finder)
    code = (
        "import json, mtl_cli\n"
        "from mtl_cli.config.locate import builtin_config_dir\n"
        "from mtl_cli.config.compose import compose\n"
        "cfg = compose(['experiment=shapes_all', 'backbone=resnet18'])\n"
        "print(json.dumps({'pkg': mtl_cli.__file__, 'conf': str(builtin_config_dir()),\n"
        "                  'tasks': sorted(cfg.tasks), 'backbone': cfg.backbone.model}))\n"
    )
    r = _run([sys.executable, "-c", code], cwd=elsewhere, env=env)
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(info["pkg"]).resolve().is_relative_to(site.resolve())
    assert Path(info["conf"]).resolve() == (site / "mtl_cli" / "conf").resolve()
    assert info["tasks"] == sorted(["shape", "color", "size", "position", "large", "present", "segmentation", "depth"])
    assert info["backbone"] == "resnet18"

    # the installed CLI: --help lists the packaged options, and a bad option exits 2 naming them
    cli = [sys.executable, "-c", "import sys; from mtl_cli.cli.train import main; sys.argv[0] = 'mtl-train'; main()"]
    r = _run([*cli, "--help"], cwd=elsewhere, env=env)
    assert "backbone: " in r.stdout and "resnet18" in r.stdout and "shapes_all" in r.stdout
    bad = subprocess.run([*cli, "backbone=nope"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown option of config group 'backbone'" in bad.stderr
    assert not (elsewhere / "outputs").exists()
