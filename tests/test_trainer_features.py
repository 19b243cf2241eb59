"""Schedules that read the monitored score (ReduceLROnPlateau), early stopping and weight EMA:
what each does to the run, checked against values recomputed by hand from the run's own records,
and resume bit for bit with each on."""

from __future__ import annotations

import json

import pytest
import torch
from test_resume import BASE, assert_same_run, interrupted_then_resumed, records, run, weights

import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.errors import ConfigError
from mtl_cli.validation import validate

# 4 steps per epoch, a validation after each; constant lr unless a test says otherwise
FAST = BASE + ["scheduler=constant", "optimizer.lr=0.01"]


def val_scores(run_dir) -> list[float]:
    return [r["score"] for r in records(run_dir) if r.get("split") == "val"]


def lrs_by_epoch(run_dir) -> dict[int, float]:
    return {r["epoch"]: r["lr"] for r in records(run_dir) if r.get("split") == "train"}


def test_plateau_lowers_the_rate_when_the_monitor_stops_rising(tmp_path):
    ov = FAST + ["scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.5", "trainer.max_epochs=5"]
    run(ov, tmp_path / "r")
    scores = val_scores(tmp_path / "r")
    # the rate each epoch trains with, replayed from the run's own val scores (mode max, patience 0,
    # threshold 1e-4 relative): halved after every validation that does not beat the best
    want, best, lr = [], None, 0.01
    for s in scores:
        want.append(lr)
        if best is None or s > best * (1 + 1e-4 if best > 0 else 1 - 1e-4):
            best = s
        else:
            lr *= 0.5
    got = lrs_by_epoch(tmp_path / "r")
    assert [got[e] for e in range(1, 6)] == pytest.approx(want, rel=1e-12)
    assert len(set(want)) > 1, f"the scores {scores} never stalled: the test checks nothing"


@pytest.mark.parametrize(
    "override,key",
    [
        ("scheduler.interval=step", "scheduler.interval"),
        ("scheduler.mode=min", "scheduler.mode"),
        ("scheduler.warmup_steps=5", "scheduler.warmup_steps"),
    ],
)
def test_plateau_settings_that_cannot_work_are_refused(override, key):
    with pytest.raises(ConfigError) as e:
        validate(compose(FAST + ["scheduler=plateau", override]))
    assert key in e.value.render()


def test_early_stopping_ends_the_run_after_patience_evaluations_without_a_rise(tmp_path, caplog):
    # min_delta 10: no evaluation after the first counts as a rise (scores are in [-1, 1])
    ov = FAST + ["trainer.max_epochs=6", "trainer.early_stopping=2", "trainer.early_stopping_min_delta=10"]
    with caplog.at_level("INFO"):
        s = run(ov, tmp_path / "r")
    assert s["epochs"] == 3 and s["steps"] == 12 and s["stopped_early"] == 3
    assert len(val_scores(tmp_path / "r")) == 3
    assert any("early stopping after epoch 3" in m for m in caplog.messages)
    state = weights(tmp_path / "r" / "checkpoints" / "last.pt")["early_stopping"]
    assert state["stale"] == 2 and state["stopped_at"] == 3


@pytest.mark.slow
def test_early_stopping_off_by_default_runs_every_epoch(tmp_path):
    s = run(FAST + ["trainer.max_epochs=3", "trainer.early_stopping_min_delta=10"], tmp_path / "r")
    assert s["epochs"] == 3 and s["stopped_early"] is None


@pytest.mark.slow
def test_early_stopping_resumes_bitwise(monkeypatch, tmp_path):
    ov = FAST + ["trainer.max_epochs=6", "trainer.early_stopping=2", "trainer.early_stopping_min_delta=10"]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 9)  # between the last two validations
    assert_same_run(tmp_path / "ref", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_early"] == 3


def test_ema_is_the_average_of_the_weights_after_each_step(monkeypatch, tmp_path):
    """decay 0.5 without warmup: shadow_n = shadow_{n-1} + 0.5 (w_n - shadow_{n-1}), from the
    initial weights, over the weights after every optimizer step (recorded by a hook)."""
    seen = []
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        if not seen:
            seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        orig(self)
        seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    ov = FAST + ["trainer.max_epochs=2", "trainer.ema=0.5", "trainer.ema_warmup=false", "trainer.checkpoint_every=null"]
    run(ov, tmp_path / "r")
    assert len(seen) == 9  # the initial weights, then 8 steps
    want = {k: v.double() for k, v in seen[0].items() if v.is_floating_point()}
    for w in seen[1:]:
        for k in want:
            want[k] += 0.5 * (w[k].double() - want[k])
    last = weights(tmp_path / "r" / "checkpoints" / "last.pt")
    for k, v in want.items():
        assert torch.allclose(last["model"][k].double(), v, atol=1e-6), k
        assert torch.equal(last["ema"]["raw"][k], seen[-1][k]), k  # the training weights beside it
    assert last["ema"]["updates"] == 8
    assert not all(torch.equal(last["model"][k], seen[-1][k]) for k in want)


def test_evaluations_and_checkpoints_use_the_averaged_weights(tmp_path):
    from mtl_cli.cli.evaluate import evaluate_run
    from mtl_cli.runs import load_run

    s = run(FAST + ["trainer.max_epochs=2", "trainer.ema=0.9"], tmp_path / "r")
    got = evaluate_run(load_run(tmp_path / "r", "best"), "test")["metrics"]
    for task, m in s["test"].items():
        for k, v in m.items():
            assert got[task][k] == pytest.approx(v, rel=1e-6, abs=1e-7), (task, k)
    val = [r for r in records(tmp_path / "r") if r.get("split") == "val"][-1]
    last = evaluate_run(load_run(tmp_path / "r", "last"), "val")["metrics"]
    assert last["shape"]["accuracy"] == pytest.approx(val["shape/accuracy"])
    assert last["size"]["mae"] == pytest.approx(val["size/mae"], rel=1e-5)


def test_ema_resumes_bitwise(monkeypatch, tmp_path):
    ov = FAST + ["trainer.max_epochs=3", "trainer.ema=0.9"]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 7)
    assert_same_run(tmp_path / "ref", tmp_path / "run")
    a = weights(tmp_path / "ref" / "checkpoints" / "last.pt")["ema"]
    b = weights(tmp_path / "run" / "checkpoints" / "last.pt")["ema"]
    assert a["updates"] == b["updates"] == 12
    assert all(torch.equal(a["raw"][k], b["raw"][k]) for k in a["raw"])


def test_bad_ema_and_early_stopping_values_are_refused():
    for override, key in [
        ("trainer.ema=1.0", "trainer.ema"),
        ("trainer.ema=-0.1", "trainer.ema"),
        ("trainer.early_stopping=0", "trainer.early_stopping"),
        ("trainer.early_stopping_min_delta=-1", "trainer.early_stopping_min_delta"),
    ]:
        with pytest.raises(ConfigError) as e:
            validate(compose(FAST + [override]))
        assert key in e.value.render(), override
