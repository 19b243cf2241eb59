"""``mtl-train`` end to end, as a user runs it: a separate process, real Hydra, real run directories.

The commands start together (module fixtures, run in the background) because each one spends most
of its time importing torch and Hydra; every test then waits for its own command.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from mtl_cli.config.locate import builtin_config_dir

DEFAULT_TASKS = {
    "shape": "classification",
    "size": "regression",
    "present": "multilabel",
    "segmentation": "segmentation",
}
TIMEOUT = 240


def mtl_train() -> list[str]:
    exe = shutil.which("mtl-train", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mtl_cli.cli.train"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_DEBUG", "HYDRA_FULL_ERROR", "MTL_CONFIG_DIR")}
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # several commands share the cores: no thread oversubscription
    return env


class Command:
    """A started ``mtl-train`` process; ``result()`` waits for it (once) and returns it."""

    def __init__(self, args: list[str], cwd: Path):
        self.args = [*mtl_train(), *args]
        self.proc = subprocess.Popen(
            self.args, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._out = None

    def result(self) -> subprocess.CompletedProcess:
        if self._out is None:
            try:
                out, err = self.proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"{self.args} timed out after {TIMEOUT} s\n{err[-3000:]}")
            self._out = subprocess.CompletedProcess(self.args, self.proc.returncode, out, err)
        return self._out

    def ok(self) -> subprocess.CompletedProcess:
        r = self.result()
        assert r.returncode == 0, (
            f"{self.args} exited {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
        )
        return r


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def user_conf(work) -> Path:
    conf = work / "myconf"
    (conf / "data").mkdir(parents=True)
    (conf / "experiment").mkdir()
    # replaces the built-in data/shapes.yaml
    (conf / "data" / "shapes.yaml").write_text(
        "name: shapes\ntrain_size: 96\nval_size: 40\ntest_size: 24\nimage_size: 32\nseed: 3\n"
    )
    (conf / "experiment" / "tiny_user.yaml").write_text(
        "# @package _global_\ntrainer:\n  batch_size: 16\noptimizer:\n  lr: 0.002\n"
    )
    return conf


@pytest.fixture(scope="module")
def commands(work, user_conf) -> dict[str, Command]:
    """Every command of this module, started at once (they mostly wait on imports)."""
    cwd = work / "cwd"  # relative outputs/ (if any) land here, not in the source tree
    cwd.mkdir()
    cmds = {
        "smoke": Command(["debug=smoke", f"run_dir={work / 'smoke'}"], cwd),
        "help": Command(["--help"], cwd),
        "cfg": Command(["--cfg", "job", "optimizer.lr=0.0003", "trainer.max_epochs=2"], cwd),
        "sweep": Command(
            ["-m", "optimizer.lr=0.001,0.0001", "seed=0,1", "debug=smoke", f"hydra.sweep.dir={work / 'sweep'}"], cwd
        ),
        "user": Command(
            ["--config-dir", str(user_conf), "experiment=tiny_user", "debug=smoke", f"run_dir={work / 'user'}"], cwd
        ),
        "user_help": Command([f"--config-dir={user_conf}", "--help"], cwd),
    }
    yield cmds
    for c in cmds.values():
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.communicate()


# ---------------------------------------------------------------- (a) a smoke run, file by file


@pytest.fixture(scope="module")
def smoke(commands, work) -> tuple[Path, subprocess.CompletedProcess]:
    return work / "smoke", commands["smoke"].ok()


def _jsonl(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_smoke_run_dir_contents(smoke):
    run_dir, _ = smoke
    for name in (
        "config.yaml",
        "overrides.yaml",
        "train.log",
        "metrics.jsonl",
        "metrics.csv",
        "data.json",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
    ):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "error.json").exists()


def test_smoke_config_and_overrides(smoke):
    run_dir, _ = smoke
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.run_dir == str(run_dir.resolve())
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 3  # debug=smoke applied
    assert cfg.trainer.eval_batch_size is None and cfg.seed == 0
    assert set(cfg.tasks) == set(DEFAULT_TASKS)
    assert yaml.safe_load((run_dir / "overrides.yaml").read_text()) == ["debug=smoke", f"run_dir={run_dir}"]
    assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == ["debug=smoke", f"run_dir={run_dir}"]
    log = (run_dir / "train.log").read_text()
    assert log.strip() and f"run directory: {run_dir.resolve()}" in log and "epoch 1" in log


def test_smoke_metrics(smoke):
    run_dir, _ = smoke
    cfg = OmegaConf.load(run_dir / "config.yaml")
    records = _jsonl(run_dir / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    test = [r for r in records if r["split"] == "test"]
    assert len(train) == cfg.trainer.limit_train_batches // cfg.logger.log_every == 3
    assert len(val) == 1 and len(test) == 1 and len(records) == 5
    assert [r["step"] for r in train] == [1, 2, 3]
    assert train[0]["lr"] > train[1]["lr"] > train[2]["lr"] >= 0
    for r in train:
        for t in DEFAULT_TASKS:
            assert math.isfinite(r[f"loss/{t}"]) and r[f"loss/{t}"] >= 0
            assert r[f"weight/{t}"] == 1.0  # weighting=static, weight 1
        assert r["lr"] >= 0 and r["samples_per_s"] > 0  # cosine decay: 0 after the last of 3 steps
        assert r["loss"] == pytest.approx(sum(r[f"loss/{t}"] for t in DEFAULT_TASKS))
    for r in (val[0], test[0]):
        for key in ("shape/accuracy", "size/mae", "present/f1", "segmentation/miou"):
            assert math.isfinite(r[key]), key
    assert val[0]["epoch"] == 1 and val[0]["step"] == 3 and "score" in val[0]

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
        header = rows[0].keys() if rows else []
    for t in DEFAULT_TASKS:
        assert f"loss/{t}" in header and f"weight/{t}" in header
    assert "split" in header and "shape/accuracy" in header and "segmentation/miou" in header
    assert len(rows) == len(records)
    assert [r["split"] for r in rows] == [r["split"] for r in records]

    data = json.loads((run_dir / "data.json").read_text())
    assert data["splits"] == {"train": cfg.data.train_size, "val": cfg.data.val_size, "test": cfg.data.test_size}
    assert data["splits"] == {"train": 2000, "val": 500, "test": 500}


def test_smoke_summary(smoke):
    run_dir, _ = smoke
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["run_dir"] == str(run_dir.resolve())
    assert set(s["test"]) == set(DEFAULT_TASKS)
    for task, kind in DEFAULT_TASKS.items():
        assert s["tasks"][task]["kind"] == kind
        metrics = s["tasks"][task]["directions"]
        assert set(s["test"][task]) >= set(metrics), task
        for m in metrics:
            assert isinstance(s["test"][task][m], float) and math.isfinite(s["test"][task][m]), (task, m)
    assert s["selected_epoch"] == 1 and s["epochs"] == 1 and s["steps"] == 3
    assert s["time_per_step_s"] > 0 and s["wall_time_s"] >= s["train_time_s"] > 0
    assert s["objective"]["monitor"] == "mean_rel"
    assert (
        s["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
        or s["environment"]["packages"]["torch"] == torch.__version__
    )
    assert s["device"] in ("cpu", "cuda", "mps")


def test_smoke_checkpoints(smoke):
    run_dir, _ = smoke
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    for ck, kind in ((best, "best"), (last, "last")):
        assert ck["kind"] == kind
        assert "model" in ck and len(ck["model"]) > 0
        assert all(isinstance(v, torch.Tensor) for v in ck["model"].values())
        assert ck["task_names"] == list(DEFAULT_TASKS)
        assert ck["step"] == 3 and ck["epoch"] == 1
    assert best["model"].keys() == last["model"].keys()


def test_smoke_stdout(smoke):
    run_dir, r = smoke
    assert f"Run directory: {run_dir.resolve()}" in r.stdout
    assert "Selected epoch 1 of 1" in r.stdout
    for task, kind in DEFAULT_TASKS.items():
        line = next((x for x in r.stdout.splitlines() if x.startswith(task + " ")), None)
        assert line is not None and kind in line, task
    assert "accuracy" in r.stdout and "miou" in r.stdout


# ---------------------------------------------------------------- (b) --help, (c) --cfg job


def test_help_lists_groups_and_options(commands):
    out = commands["help"].ok().stdout
    section = out.split("Config groups", 1)[1].split("Default config", 1)[0]
    lines = {ln.split(":", 1)[0]: ln.split(":", 1)[1] for ln in section.splitlines() if ": " in ln}
    conf = builtin_config_dir()
    for group in sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        assert group in lines, f"group {group} not listed in --help"
        listed = [o.strip() for o in lines[group].split(",")]
        assert listed == sorted(p.stem for p in (conf / group).glob("*.yaml")), group
    assert "resnet18" in lines["backbone"] and "small_cnn" in lines["backbone"]
    assert "mtl-train" in out and "MTL_DEBUG=1" in out


def test_cfg_job_prints_the_composed_config(commands, work):
    r = commands["cfg"].ok()
    cfg = yaml.safe_load(r.stdout)
    assert cfg["optimizer"]["lr"] == 0.0003
    assert cfg["trainer"]["max_epochs"] == 2
    assert cfg["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert set(cfg["tasks"]) == set(DEFAULT_TASKS)
    assert "hydra" not in cfg
    assert not (work / "cwd" / "outputs").exists()  # printing the config runs nothing


# ---------------------------------------------------------------- (d) a multirun sweep


def test_sweep_creates_one_dir_per_job(commands, work):
    r = commands["sweep"].ok()
    sweep = work / "sweep"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        cfg = OmegaConf.load(job / "config.yaml")
        summary = json.loads((job / "summary.json").read_text())
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        assert float(overrides["optimizer.lr"]) == cfg.optimizer.lr and int(overrides["seed"]) == cfg.seed
        assert overrides["debug"] == "smoke"
        assert cfg.run_dir == str(job.resolve()) == summary["run_dir"]
        assert summary["steps"] == 3 and set(summary["test"]) == set(DEFAULT_TASKS)
        seen.add((cfg.optimizer.lr, cfg.seed))
    assert seen == set(itertools.product([0.001, 0.0001], [0, 1]))
    assert (sweep / "multirun.yaml").is_file()
    assert r.stdout.count("Run directory:") == 4


# ---------------------------------------------------------------- (e) a user config directory


def test_user_config_dir(commands, work, user_conf):
    commands["user"].ok()
    run_dir = work / "user"
    data = json.loads((run_dir / "data.json").read_text())
    assert data["splits"] == {"train": 96, "val": 40, "test": 24}  # the user's data/shapes.yaml won
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert cfg.data.seed == 3 and cfg.trainer.batch_size == 16 and cfg.optimizer.lr == 0.002  # experiment
    train = [r for r in _jsonl(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 3  # 96 / 16 = 6 batches, limited to 3 by debug=smoke

    out = commands["user_help"].ok().stdout  # --help lists the user's options with the built-in ones
    experiments = next(ln for ln in out.splitlines() if ln.startswith("experiment: "))
    assert "tiny_user" in experiments and "shapes_all" in experiments
    assert "train_size: 96" in out  # the default config shown is the user's data/shapes.yaml
