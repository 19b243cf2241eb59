"""Resume: a run interrupted at any step and resumed ends with the weights and metrics of the
uninterrupted run, bit for bit (CPU), whatever the weighting method keeps as state.

Interruptions here are in-process (an exception after step k, the checkpoints on disk as a crash
leaves them); tests/test_faults.py kills real processes (kill -9, SIGTERM).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.train.api import train

# 3 tasks, an MLP on 128 training images in batches of 32: 4 steps per epoch, 12 in 3 epochs
BASE = [
    "backbone=mlp",
    "data.train_size=128",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "tasks.segmentation.enabled=false",
    "trainer.batch_size=32",
    "trainer.max_epochs=3",
    "trainer.progress=false",
    "logger.log_every=1",
    "trainer.checkpoint_every=2",
    "device=cpu",
    "logger.console_summary=false",
]
TIMING = ("samples_per_s",)


class Crash(Exception):
    """Stands for a kill: nothing runs after it but what an exception unwinds."""


def crash_after(monkeypatch, step: int) -> None:
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        orig(self)
        if self.prog.step == step:
            raise Crash(f"after step {step}")

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in TIMING:
            r.pop(k, None)
        out.append(r)
    return out


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_same_run(ref: Path, got: Path) -> None:
    a, b = weights(ref / "checkpoints" / "last.pt"), weights(got / "checkpoints" / "last.pt")
    for part in ("model", "weighting"):
        assert a[part].keys() == b[part].keys()
        diff = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not diff, f"{part} differs after resume: {diff[:5]}"
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    assert records(ref) == records(got)
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((got / "summary.json").read_text())
    assert sa["test"] == sb["test"] and sa["selected_epoch"] == sb["selected_epoch"]
    assert sa["steps"] == sb["steps"] == a["step"]


def run(overrides: list[str], run_dir: Path) -> dict:
    return train(compose(overrides), run_dir)


def interrupted_then_resumed(monkeypatch, overrides: list[str], run_dir: Path, step: int) -> dict:
    with monkeypatch.context() as m:
        crash_after(m, step)
        with pytest.raises(Crash):
            run(overrides, run_dir)
    assert not (run_dir / "summary.json").exists()
    return run(overrides + ["resume=auto"], run_dir)


@pytest.fixture(scope="module")
def famo_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "famo"
    run(BASE + ["weighting=famo"], d)
    return d


# 3: mid-epoch, one step after a checkpoint; 4: last step of epoch 1 (before its validation);
# 6: on a checkpoint; 11: in the last epoch
@pytest.mark.parametrize(
    "step",
    [
        3,
        pytest.param(4, marks=pytest.mark.slow),
        pytest.param(6, marks=pytest.mark.slow),
        pytest.param(11, marks=pytest.mark.slow),
    ],
)
def test_famo_resumes_bitwise_at_any_step(monkeypatch, tmp_path, famo_reference, step):
    interrupted_then_resumed(monkeypatch, BASE + ["weighting=famo"], tmp_path / "run", step)
    assert_same_run(famo_reference, tmp_path / "run")


def test_cnn_with_segmentation_resumes_bitwise(monkeypatch, tmp_path):
    ov = BASE + ["backbone=small_cnn", "tasks.segmentation.enabled=true", "trainer.max_epochs=2"]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 5)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


# methods with state of their own: loss histories (dwa), an RNG (rlw), EMAs of gradient
# similarities (gradvac), tracked gradients (moco), cached weights (every=3)
@pytest.mark.parametrize(
    "weighting",
    [
        "dwa",
        "rlw",
        pytest.param("gradvac", marks=pytest.mark.slow),
        "moco",
        pytest.param("nash_mtl", marks=pytest.mark.slow),
    ],
)
def test_stateful_weightings_resume_bitwise(monkeypatch, tmp_path, weighting):
    ov = BASE + [f"weighting={weighting}"] + (["weighting.every=3"] if weighting == "nash_mtl" else [])
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 7)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_accumulation_and_scheduler_resume_bitwise(monkeypatch, tmp_path):
    ov = BASE + [
        "trainer.accumulate_grad_batches=2",
        "trainer.max_epochs=4",
        "scheduler.warmup_steps=2",
        "trainer.checkpoint_every=1",
        "trainer.gradient_clip_val=1.0",
    ]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 3)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_short_last_accumulation_group_is_its_own_step_and_resumes_bitwise(monkeypatch, tmp_path):
    """4 batches per epoch with accumulate_grad_batches=3: each epoch is a step of 3 micro-batches
    (losses divided by 3) and a step of the 1 left (divided by 1), never carried into the next
    epoch, so the epoch-end checkpoint holds no half-accumulated gradient; resuming after the
    short step and after a full one is bitwise."""
    ov = BASE + ["trainer.accumulate_grad_batches=3", "trainer.checkpoint_every=1"]
    divisors = []
    orig = trainer_mod.Trainer._backward

    def backward(self, total, inputs=None, *, divisor):
        divisors.append(divisor)
        return orig(self, total, inputs, divisor=divisor)

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "_backward", backward)
        summary = run(ov, tmp_path / "ref")
    assert summary["steps"] == 6  # 2 steps per epoch, 3 epochs
    assert divisors == [3, 3, 3, 1] * 3
    for step in (2, 3):
        interrupted_then_resumed(monkeypatch, ov, tmp_path / f"run{step}", step)
        assert_same_run(tmp_path / "ref", tmp_path / f"run{step}")


def test_several_datasets_with_random_sampling_resume_bitwise(monkeypatch, tmp_path):
    """Two datasets drawn at random: the sampling generator and each dataset's pass and position
    are part of the checkpoint."""
    ov = [
        "experiment=two_inputs",
        "data.train_size=96",
        "data.val_size=32",
        "data.test_size=32",
        "datasets.outlines.train_size=64",
        "datasets.outlines.val_size=32",
        "datasets.outlines.test_size=32",
        "data.image_size=16",
        "datasets.outlines.image_size=16",
        "trainer.batch_size=16",
        "trainer.max_epochs=2",
        "trainer.epoch_length=5",
        "trainer.sampling=temperature",
        "trainer.progress=false",
        "logger.log_every=1",
        "trainer.checkpoint_every=3",
        "device=cpu",
        "logger.console_summary=false",
    ]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 5)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_metrics_have_one_line_per_logged_step_after_resume(monkeypatch, tmp_path):
    d = tmp_path / "run"
    interrupted_then_resumed(monkeypatch, BASE, d, 5)
    train_steps = [r["step"] for r in records(d) if r["split"] == "train"]
    assert train_steps == list(range(1, 13))  # log_every=1, 12 steps: each once, in order
    assert [r["epoch"] for r in records(d) if r["split"] == "val"] == [1, 2, 3]
    assert [r["split"] for r in records(d)][-1] == "test"


def test_a_cut_metrics_line_is_dropped_on_resume(monkeypatch, tmp_path, famo_reference):
    """A kill in the middle of a metrics line leaves half a line: the resume drops it."""
    d = tmp_path / "run"
    ov = BASE + ["weighting=famo"]
    with monkeypatch.context() as m:
        crash_after(m, 7)
        with pytest.raises(Crash):
            run(ov, d)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "ep')
    run(ov + ["resume=auto"], d)
    assert_same_run(famo_reference, d)


def test_resume_auto_without_checkpoint_starts_a_new_run(tmp_path):
    s = run(BASE + ["resume=auto", "trainer.max_epochs=1"], tmp_path / "fresh")
    assert s["steps"] == 4 and (tmp_path / "fresh" / "checkpoints" / "last.pt").is_file()


def test_resume_a_finished_run_extends_it(tmp_path):
    """max_epochs may grow on resume: the run continues from its last epoch."""
    d = tmp_path / "run"
    run(BASE + ["trainer.max_epochs=1"], d)
    s = run(BASE + ["trainer.max_epochs=2", "resume=auto"], d)
    assert s["epochs"] == 2 and s["steps"] == 8
    assert [r["epoch"] for r in records(d) if r["split"] == "val"] == [1, 2]
    assert sum(r["split"] == "test" for r in records(d)) == 1  # the first run's test record was after last.pt


def test_top_k_keeps_the_best_evaluations(tmp_path):
    d = tmp_path / "run"
    run(BASE + ["trainer.save_top_k=2", "trainer.max_epochs=4"], d)
    scores = {r["epoch"]: r["score"] for r in records(d) if r["split"] == "val"}
    best2 = sorted(scores, key=lambda e: -scores[e])[:2]
    files = sorted(p.name for p in (d / "checkpoints" / "top").glob("*.pt"))
    assert files == sorted(f"epoch={e:04d}-step={4 * e:07d}.pt" for e in best2)
    for name in files:
        ck = weights(d / "checkpoints" / "top" / name)
        assert ck["epoch"] in best2 and ck["kind"] == "top"
