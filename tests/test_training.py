"""The trainer on the embedded data: learning, determinism, missing labels, accumulation,
warmup, precision, selection. Small data and few steps keep each test to seconds."""

import json
import math

import pytest
import torch

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.compose import compose
from mtl_cli.train.api import train
from mtl_cli.validation import validate


def records(run_dir, split):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def run(tmp_path, overrides, name="run"):
    cfg = compose(overrides)
    return train(cfg, run_dir=tmp_path / name), tmp_path / name


def test_loss_goes_down_and_beats_chance(tmp_path):
    summary, rd = run(
        tmp_path,
        [
            "data.train_size=1024",
            "data.val_size=64",
            "data.test_size=256",
            "trainer.max_epochs=4",
            "logger.log_every=4",
            "trainer.progress=false",
        ],
    )
    recs = records(rd, "train")
    assert len(recs) == 16  # 4 epochs x 16 steps, one record every 4 steps

    def ratio(key):  # mean of the last two records over the mean of the first two
        return (recs[-1][key] + recs[-2][key]) / (recs[0][key] + recs[1][key])

    assert ratio("loss") < 0.8
    assert ratio("loss/shape") < 0.92
    assert ratio("loss/size") < 0.2
    assert ratio("loss/present") < 0.97
    assert ratio("loss/segmentation") < 0.5
    assert summary["test"]["shape"]["accuracy"] > 0.35  # chance: 0.25
    assert summary["test"]["segmentation"]["pixel_accuracy"] > 0.8


def test_same_seed_same_result(tmp_path, small_overrides):
    o = small_overrides + ["trainer.max_steps=6", "trainer.max_epochs=1"]
    a, _ = run(tmp_path, o, "a")
    b, _ = run(tmp_path, o, "b")
    c, _ = run(tmp_path, o + ["seed=1"], "c")
    assert a["test"] == b["test"]
    assert a["test"] != c["test"]


def test_static_weights_are_logged_and_used(tmp_path, small_overrides):
    _, rd = run(
        tmp_path,
        small_overrides
        + ["trainer.max_steps=2", "logger.log_every=1", "tasks.shape.weight=0.5", "tasks.size.weight=2"],
    )
    r = records(rd, "train")[0]
    assert (r["weight/shape"], r["weight/size"], r["weight/present"]) == (0.5, 2.0, 1.0)
    expected = 0.5 * r["loss/shape"] + 2 * r["loss/size"] + r["loss/present"] + r["loss/segmentation"]
    assert r["loss"] == pytest.approx(expected)


def test_task_weight_prescales_the_loss_under_ew_too(tmp_path, small_overrides):
    """``tasks.<name>.weight`` is one pre-scale of the loss under every method; the log shows the
    effective weight on the raw loss."""
    _, rd = run(
        tmp_path,
        small_overrides + ["weighting=ew", "trainer.max_steps=1", "logger.log_every=1", "tasks.shape.weight=0.5"],
    )
    rec = records(rd, "train")[0]
    assert rec["weight/shape"] == 0.5 and rec["weight/size"] == 1.0


def test_task_without_any_label_still_trains_the_others(tmp_path, small_overrides):
    summary, rd = run(
        tmp_path, small_overrides + ["trainer.max_steps=4", "logger.log_every=1", "+data.missing_labels.size=1.0"]
    )
    assert all(r["loss/size"] == 0.0 for r in records(rd, "train"))
    assert math.isnan(summary["test"]["size"]["mae"]) or summary["test"]["size"]["mae"] is None
    assert summary["test"]["shape"]["accuracy"] > 0


def test_unlabelled_task_head_gets_no_gradient(small_overrides):
    plan = validate(compose(small_overrides))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    batch = plan.source.load()["train"].__getitems__(list(range(8)))
    masks = dict(batch["masks"])
    masks["size"] = torch.zeros(8, dtype=torch.bool)
    preds = model(batch["inputs"])
    loss = sum(t.loss(preds[t.name], batch["targets"][t.target], masks[t.target]) for t in tasks)
    loss.backward()
    size_grads = [p.grad for p in model.task_parameters("size")]
    assert all(g is None or torch.count_nonzero(g) == 0 for g in size_grads)
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.task_parameters("shape"))
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.shared_parameters())


def test_partial_labels_metrics_count_labelled_only(tmp_path, small_overrides):
    summary, _ = run(tmp_path, small_overrides + ["trainer.max_steps=2", "+data.missing_labels.shape=0.5"])
    assert 0.0 <= summary["test"]["shape"]["accuracy"] <= 1.0


def test_gradient_accumulation_matches_big_batch(tmp_path, small_overrides):
    # no batch norm (MLP backbone, vector tasks) so that 2 x 16 accumulated == 1 x 32
    base = small_overrides + [
        "backbone=mlp",
        "tasks.segmentation.enabled=false",
        "trainer.max_steps=3",
        "scheduler=constant",
        "optimizer=sgd",
        "optimizer.momentum=0",
        "optimizer.nesterov=false",
    ]
    _, big = run(tmp_path, base + ["trainer.batch_size=32"], "big")
    _, acc = run(tmp_path, base + ["trainer.batch_size=16", "trainer.accumulate_grad_batches=2"], "acc")
    wa = torch.load(big / "checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(acc / "checkpoints/last.pt", weights_only=True)["model"]
    start = validate(compose(base))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k
    assert json.loads((big / "summary.json").read_text())["steps"] == 3
    assert start is not None


def test_warmup_then_cosine_lr(tmp_path, small_overrides):
    _, rd = run(
        tmp_path,
        small_overrides
        + ["trainer.max_steps=8", "logger.log_every=1", "scheduler.warmup_steps=4", "optimizer.lr=0.01"],
    )
    lrs = [r["lr"] for r in records(rd, "train")]
    assert lrs[:3] == sorted(lrs[:3]) and lrs[3] == pytest.approx(0.01)  # rising, then the peak
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] < 0.01


def test_bf16_autocast_on_cpu(tmp_path, small_overrides):
    overrides = small_overrides + ["trainer.precision=bf16", "trainer.max_steps=3", "logger.log_every=1"]
    summary, rd = run(tmp_path, overrides)
    assert all(math.isfinite(r["loss"]) for r in records(rd, "train"))
    assert summary["steps"] == 3


def test_monitor_selects_best_epoch_of_that_metric(tmp_path, small_overrides):
    summary, rd = run(tmp_path, small_overrides + ["trainer.max_epochs=3", "trainer.monitor=size/mae"])
    vals = {r["epoch"]: r["size/mae"] for r in records(rd, "val")}
    assert summary["selected_epoch"] == min(vals, key=vals.get)
    assert summary["val_selected"]["size"]["mae"] == pytest.approx(vals[summary["selected_epoch"]])
    best = torch.load(rd / "checkpoints/best.pt", weights_only=True)
    assert best["epoch"] == summary["selected_epoch"]


def test_eight_tasks_six_kinds(tmp_path, small_overrides):
    summary, _ = run(tmp_path, small_overrides + ["tasks=shapes_all", "trainer.max_steps=3"])
    assert {t["kind"] for t in summary["tasks"].values()} == {
        "classification",
        "binary",
        "multilabel",
        "regression",
        "segmentation",
        "dense_regression",
    }
    assert set(summary["test"]["depth"]) == {"abs_err", "rel_err", "loss"}


def test_hps_parameter_partition(small_overrides):
    plan = validate(compose(small_overrides))
    model = build_model(plan, build_tasks(plan))
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in model.task_names]
    everything = {id(p) for p in model.parameters()}
    assert shared.isdisjoint(set().union(*per_task))
    assert all(a.isdisjoint(b) for i, a in enumerate(per_task) for b in per_task[i + 1 :])
    assert shared | set().union(*per_task) == everything
    rep = model.encode(plan.source.load()["val"].__getitems__([0, 1])["inputs"])
    assert rep.shape == (2, 128, 4, 4)  # 16x16 images, stride 4


def test_fused_linear_heads_match_separate_heads(small_overrides):
    """40 linear heads run as one matmul; outputs and per-head gradients equal separate calls."""
    from mtl_cli.models.base import pool

    overrides = small_overrides + ["tasks=none"] + [f"+tasks.t{i}={{kind: binary, target: large}}" for i in range(40)]
    plan = validate(compose(overrides))
    model = build_model(plan, build_tasks(plan))
    assert len(model.run_heads.groups) == 1 and len(model.run_heads.groups[0]) == 40
    x = plan.source.load()["val"].__getitems__(list(range(4)))["inputs"]
    rep = model.encode(x)
    fused = model.decode(rep)
    for i in (0, 17, 39):
        head = model.heads[f"t{i}"]
        assert torch.allclose(fused[f"t{i}"], head.fc(pool(rep)), atol=1e-6)
    fused["t3"].sum().backward()
    assert torch.count_nonzero(model.heads["t3"].fc.weight.grad) > 0
    assert model.heads["t4"].fc.weight.grad is None or torch.count_nonzero(model.heads["t4"].fc.weight.grad) == 0


def test_gradient_clipping_bounds_the_update(tmp_path, small_overrides):
    base = small_overrides + [
        "trainer.max_steps=1",
        "scheduler=constant",
        "optimizer=sgd",
        "optimizer.lr=1.0",
        "optimizer.momentum=0",
        "optimizer.nesterov=false",
        "optimizer.weight_decay=0",
        "trainer.gradient_clip_val=0.001",
        "trainer.eval_every=5",
    ]
    plan = validate(compose(base))
    torch.manual_seed(0)
    start = build_model(plan, build_tasks(plan)).state_dict()
    _, rd = run(tmp_path, base)
    end = torch.load(rd / "checkpoints/last.pt", weights_only=True)["model"]
    delta = torch.sqrt(
        sum(
            ((end[k] - start[k]).float() ** 2).sum() for k in start if end[k].is_floating_point() and "running" not in k
        )
    )
    assert 0 < delta.item() <= 0.001 * 1.0001  # lr x clip norm


def test_tabular_experiment_on_a_csv(tmp_path):
    import random

    rnd = random.Random(0)
    rows = ["x1,x2,x3,price,kind"]
    for _ in range(300):
        x1, x2, x3 = (rnd.uniform(-1, 1) for _ in range(3))
        rows.append(f"{x1:.4f},{x2:.4f},{x3:.4f},{2 * x1 - x2 + 0.05 * rnd.gauss(0, 1):.4f},{'a' if x3 > 0 else 'b'}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = compose(
        [
            "experiment=tabular",
            f"data.path={tmp_path / 'd.csv'}",
            "data.targets={price: price, kind: kind}",
            "+tasks.price.kind=regression",
            "+tasks.kind.kind=classification",
            "trainer.max_epochs=15",
            "trainer.batch_size=32",
            "trainer.progress=false",
            "optimizer.lr=0.01",
        ]
    )
    summary = train(cfg, run_dir=tmp_path / "run")
    assert summary["test"]["kind"]["accuracy"] > 0.85
    assert summary["test"]["price"]["r2"] > 0.8
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["label_maps"]["kind"] == {"a": 0, "b": 1}
