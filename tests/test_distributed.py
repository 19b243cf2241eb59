"""Data parallelism on the CPU: gloo, 2 processes on 127.0.0.1 started by torch's own launcher.

The 2-process run of a config equals, step by step, the 1-process run with the same global batch
(``trainer.batch_size`` per process): the logged task weights and losses, the final parameters
and the test metrics agree within float32 round-off, for loss-based and gradient methods, with
representation gradients, accumulation, and two datasets. The bytes each run all-reduces are
counted (docs/distributed.md's table).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl_cli.config.compose import compose
from mtl_cli.train.api import train

WORKER = Path(__file__).parent / "helpers" / "dist_worker.py"
B = 8  # per-process batch; the one-process reference uses 2 * B
BASE = [
    "backbone=mlp",
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=12",
    "tasks.segmentation.enabled=false",
    "trainer.max_epochs=3",
    "trainer.progress=false",
    "logger.log_every=1",
    "logger.console_summary=false",
    "device=cpu",
    "scheduler=constant",
]
FAST = {
    "ew": ["weighting=ew"],
    "famo": ["weighting=famo"],
    "upgrad": ["weighting=upgrad"],
    "mgda_ub": ["weighting=mgda_ub"],
    # missing labels: the processes see different numbers of labels per task (the losses' counts
    # are summed over them), through DDP and through the gradient engine
    "missing_ew": ["weighting=ew", "+data.missing_labels={size: 0.5, shape: 0.3}"],
    "missing_pcgrad": ["weighting=pcgrad", "+data.missing_labels={size: 0.5, shape: 0.3}"],
}
# two datasets, each task reading its own; one dataset per step, the same on every process
TWO = [
    "experiment=two_inputs",
    "backbone=mlp",
    "backbone.hidden=[16]",
    "~arch.stems.image",
    "+arch.stems.image={name: mlp, hidden: [16]}",
    "arch.norm_per_input=false",
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=12",
    "datasets.outlines.train_size=32",
    "datasets.outlines.val_size=16",
    "datasets.outlines.test_size=16",
    "datasets.outlines.image_size=12",
    "trainer.max_epochs=2",
    "trainer.progress=false",
    "logger.log_every=1",
    "logger.console_summary=false",
    "device=cpu",
    "scheduler=constant",
]
TWO_RUNS = {"two_ew": ["weighting=ew"], "two_famo": ["weighting=famo"], "two_mgda": ["weighting=mgda"]}
SLOW = {
    "static": ["weighting=static", "tasks.shape.weight=2.0"],
    "uw": ["weighting=uw"],
    "dwa": ["weighting=dwa"],
    "mgda": ["weighting=mgda"],
    "pcgrad": ["weighting=pcgrad"],
    "nash_mtl": ["weighting=nash_mtl"],
    "cagrad": ["weighting=cagrad"],
    "graddrop": ["weighting=graddrop"],
    "gradnorm": ["weighting=gradnorm"],
    "accumulation": ["weighting=upgrad", "trainer.accumulate_grad_batches=2"],
    "accumulation_ew": ["weighting=ew", "trainer.accumulate_grad_batches=2"],
    "every_k": ["weighting=nash_mtl", "weighting.every=2"],
}


def launch(runs: dict, tmp: Path, base: list[str] = BASE, nproc: int = 2) -> dict:
    spec = tmp / "spec.json"
    out = tmp / "dist"
    spec.write_text(json.dumps({"base": base + [f"trainer.batch_size={B}"], "runs": runs, "out": str(out)}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER)]
    done = subprocess.run(cmd + [str(spec)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads((out / "report.json").read_text())


def records(run: Path, split: str) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] == split:
            r.pop("samples_per_s", None)
            out.append(r)
    return out


def assert_same_run(one: Path, two: Path, rtol: float = 2e-4, atol: float = 2e-5) -> None:
    a, b = records(one, "train"), records(two, "train")
    assert len(a) == len(b) and len(a) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                assert abs(va - vb) <= atol + rtol * abs(va) or (va != va and vb != vb), (ra["step"], k, va, vb)
            else:
                assert va == vb, (k, va, vb)
    wa = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(two / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=10 * rtol, atol=10 * atol), k
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert sa["steps"] == sb["steps"] and sa["selected_epoch"] == sb["selected_epoch"]
    for t, m in sa["test"].items():
        for name, v in m.items():
            assert abs(v - sb["test"][t][name]) <= 1e-3 + 1e-3 * abs(v), (t, name, v, sb["test"][t][name])


def reference(name: str, extra: list[str], tmp: Path, base: list[str] = BASE) -> Path:
    d = tmp / "one" / name
    train(compose(base + extra + [f"trainer.batch_size={2 * B}"]), d)
    return d


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, launch(FAST, tmp)


@pytest.mark.parametrize("name", list(FAST))
def test_two_processes_equal_one_with_the_global_batch(name, two_process_runs):
    tmp, report = two_process_runs
    assert report[name]["error"] is None
    one = reference(name, FAST[name], tmp)
    assert_same_run(one, tmp / "dist" / name)


def test_only_rank_0_writes_and_bytes_are_counted(two_process_runs):
    tmp, report = two_process_runs
    run = tmp / "dist" / "ew"
    assert sorted(p.name for p in run.iterdir() if p.name != ".lock") == [
        "checkpoints",
        "config.yaml",
        "data.json",
        "metrics.csv",
        "metrics.jsonl",
        "summary.json",
        "train.log",
    ]
    ew, upgrad, rep = report["ew"]["bytes"], report["upgrad"]["bytes"], report["mgda_ub"]["bytes"]
    steps = report["ew"]["steps"]
    # EW: DDP all-reduces every parameter gradient once per step (float32)
    params = sum(p.numel() for p in torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"].values())
    assert ew["parameter gradients"] == 4 * params * steps
    assert "task gradients" not in ew and "gramian" not in ew
    # a parameter-gradient method: the [T, P_shared] rows each step, the task heads once
    assert upgrad["task gradients"] > ew["parameter gradients"]
    # a representation method: only a [T, T] Gramian per step (T = 3 tasks, float32)
    assert rep["gramian"] == 3 * 3 * 4 * steps


@pytest.mark.slow
def test_two_datasets_in_two_processes_equal_one(tmp_path):
    report = launch(TWO_RUNS, tmp_path, base=TWO)
    for name, extra in TWO_RUNS.items():
        assert report[name]["error"] is None, report[name]
        assert_same_run(reference(name, extra, tmp_path, base=TWO), tmp_path / "dist" / name)


@pytest.mark.slow
def test_two_processes_equal_one_for_every_listed_method(tmp_path):
    report = launch(SLOW, tmp_path)
    for name, extra in SLOW.items():
        assert report[name]["error"] is None, report[name]
        assert_same_run(reference(name, extra, tmp_path), tmp_path / "dist" / name)
