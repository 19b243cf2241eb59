"""mtl-configs: ``list`` names every group and option with its description (the file's first
comment line) and marks the defaults; ``copy`` copies the built-in configs, never overwrites
without --force, and mtl-train composes from the copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import mtl_cli.cli.train as train_cli
from mtl_cli.cli import configs
from mtl_cli.config.locate import ENV, builtin_config_dir

CONF = builtin_config_dir()


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "")  # restored afterwards, also when mtl-train --config-dir sets it
    monkeypatch.delenv("MTL_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        configs.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _first_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
        if line.strip() and not line.startswith("#"):
            return ""
    return ""


def _sections(out: str) -> dict[str, list[tuple[str, str, str]]]:
    """group -> [(mark, option, description)] from the list output."""
    sections, current = {}, None
    for line in out.splitlines():
        if m := re.fullmatch(r"(\w+)(: .*)?", line):
            current = sections.setdefault(m.group(1), [])
        elif current is not None and (m := re.fullmatch(r"  ([* ]) (\S+)(?: +(.*))?", line)):
            current.append((m.group(1), m.group(2), m.group(3) or ""))
    return sections


def test_list_names_every_option_with_its_description(capsys):
    code, out, err = _run(["list"], capsys)
    assert code == 0 and err == ""
    sections = _sections(out)
    groups = sorted(p.name for p in CONF.iterdir() if p.is_dir())
    assert sorted(sections) == groups
    for g in groups:
        files = sorted((CONF / g).glob("*.yaml"))
        assert [o for _, o, _ in sections[g]] == [f.stem for f in files], g
        assert [d for _, _, d in sections[g]] == [_first_comment(f) for f in files], g
    # a few by hand: the description, and * on train.yaml's default choice
    assert ("*", "small_cnn", "Small CNN for small images (mtl_cli/models/backbones/small_cnn.py)") in sections[
        "backbone"
    ]
    assert (
        " ",
        "ew",
        "Equal weighting: plain sum of the task losses (times tasks.<name>.weight, like every method)",
    ) in sections["weighting"]
    assert [o for m, o, _ in sections["weighting"] if m == "*"] == ["static"]
    assert not [o for m, o, _ in sections["launcher"] if m == "*"]  # launcher: null by default
    assert sections["launcher"][0][2].startswith("Parallel jobs on this machine (joblib, one process per job)")
    assert "\nweighting: how task losses are combined\n" in out  # the group's comment in train.yaml


def test_list_some_groups_and_user_configs(capsys, tmp_path):
    mine = tmp_path / "mine" / "launcher"
    mine.mkdir(parents=True)
    (mine / "cluster.yaml").write_text("# @package _global_\n# our cluster\ndefaults: []\n")
    code, out, _ = _run(["list", "launcher", "--config-dir", str(tmp_path / "mine")], capsys)
    assert code == 0
    assert _sections(out) == {
        "launcher": [
            (" ", "cluster", "our cluster"),
            (" ", "joblib", _first_comment(CONF / "launcher" / "joblib.yaml")),
            (" ", "slurm", _first_comment(CONF / "launcher" / "slurm.yaml")),
            (" ", "submitit_local", _first_comment(CONF / "launcher" / "submitit_local.yaml")),
        ]
    }
    assert f"User config dirs (searched first): {tmp_path / 'mine'}" in out


def test_list_an_unknown_group_exits_2(capsys):
    code, out, err = _run(["list", "launchr", "weighting"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "launchr: no such config group (got 'launchr')" in err
    assert "did you mean launcher?" in err and "allowed: arch, backbone, data, debug, experiment" in err


def test_copy_then_mtl_train_composes_from_the_copy(tmp_path, capsys):
    dest = tmp_path / "myconf"
    code, out, _ = _run(["copy", str(dest)], capsys)
    assert code == 0
    files = sorted(p.relative_to(CONF) for p in CONF.rglob("*.yaml"))
    assert sorted(p.relative_to(dest) for p in dest.rglob("*.yaml")) == files
    assert all((dest / f).read_bytes() == (CONF / f).read_bytes() for f in files)
    assert f"Copied {len(files)} config files" in out and f"mtl-train --config-dir {dest}" in out
    # change two copies: a group option and the primary config
    adamw = dest / "optimizer" / "adamw.yaml"
    adamw.write_text(adamw.read_text().replace("lr: 0.003", "lr: 0.0123"))
    train = dest / "train.yaml"
    train.write_text(train.read_text().replace("seed: 0 ", "seed: 7 "))
    train_cli.main(["--config-dir", str(dest), "--cfg", "job"])  # prints the composed config
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["optimizer"]["lr"] == 0.0123 and cfg["seed"] == 7
    assert cfg["optimizer"]["weight_decay"] == 0.0001  # the rest as built in


def test_copy_refuses_to_overwrite_without_force(tmp_path, capsys):
    dest = tmp_path / "c"
    assert _run(["copy", str(dest), "launcher", "hparams_search"], capsys)[0] == 0
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.yaml")) == [
        "hparams_search/optuna.yaml",
        "hparams_search/optuna_multi.yaml",
        "launcher/joblib.yaml",
        "launcher/slurm.yaml",
        "launcher/submitit_local.yaml",
    ]
    mine = dest / "launcher" / "joblib.yaml"
    mine.write_text("# mine\n")
    code, out, err = _run(["copy", str(dest), "launcher"], capsys)
    assert code == 2 and out == ""
    assert f"{dest}: 3 of the 3 files exist already and would be overwritten" in err
    assert "launcher/joblib.yaml, launcher/slurm.yaml, launcher/submitit_local.yaml" in err and "--force" in err
    assert mine.read_text() == "# mine\n"  # untouched
    code, out, _ = _run(["copy", str(dest), "launcher", "--force"], capsys)
    assert code == 0 and "3 of them overwritten" in out
    assert mine.read_bytes() == (CONF / "launcher" / "joblib.yaml").read_bytes()


def test_copy_errors_exit_2(tmp_path, capsys):
    code, _, err = _run(["copy", str(tmp_path / "d"), "optimzer"], capsys)
    assert code == 2 and "optimzer: no such config group" in err and "did you mean optimizer?" in err
    assert not (tmp_path / "d").exists()
    (tmp_path / "f").write_text("")
    code, _, err = _run(["copy", str(tmp_path / "f")], capsys)
    assert code == 2 and f"{tmp_path / 'f'} is a file, not a folder" in err and "Traceback" not in err
