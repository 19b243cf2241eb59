"""Tasks that bring their own datasets: validation, which dataset feeds each step, mixed batches,
missing labels, and per-dataset evaluation."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.compose import compose
from mtl_cli.data.base import InMemoryDataset, with_prefix
from mtl_cli.errors import ConfigError
from mtl_cli.models.base import Backbone
from mtl_cli.registry import BACKBONES
from mtl_cli.tasks.base import LossComputer
from mtl_cli.train.api import train
from mtl_cli.train.batches import make_loader
from mtl_cli.train.sampling import TrainStream
from mtl_cli.validation import validate

TWO = [
    "experiment=two_inputs",
    "trainer.progress=false",
    "backbone.channels=[8,16,16]",
    "data.train_size=96",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "datasets.outlines.train_size=32",
    "datasets.outlines.val_size=16",
    "datasets.outlines.test_size=16",
    "datasets.outlines.image_size=12",
]


def _loaders(sizes: dict[str, int], batch_size: int = 1) -> dict:
    out = {}
    for name, n in sizes.items():
        ds = InMemoryDataset({"x": torch.arange(n, dtype=torch.float32)[:, None]}, {"y": torch.zeros(n)})
        out[name] = make_loader(with_prefix(ds, f"{name}/"), batch_size, True, 0, 0, torch.device("cpu"))
    return out


def _problems(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    return err.value.render()


# ---------------------------------------------------------------- sampling
def test_round_robin_alternates_and_epoch_lengths_follow_the_rule():
    s = TrainStream(_loaders({"a": 6, "b": 2}), "round_robin", epoch_length="largest")
    assert len(s) == 12  # a (6 batches) drawn every other step: 6 / (1/2)
    order = [names for _, names, _ in s.epoch()]
    assert order == [("a",), ("b",)] * 6
    assert len(TrainStream(_loaders({"a": 6, "b": 2}), "round_robin", epoch_length="smallest")) == 4
    assert len(TrainStream(_loaders({"a": 6, "b": 2}), "round_robin", epoch_length=5)) == 5
    # a short epoch ends mid-cycle: the next one continues with the other dataset
    s = TrainStream(_loaders({"a": 6, "b": 2}), "round_robin", epoch_length=3)
    assert [n for _, n, _ in s.epoch()] == [("a",), ("b",), ("a",)]
    assert [n for _, n, _ in s.epoch()] == [("b",), ("a",), ("b",)]


def test_smaller_datasets_cycle_and_reshuffle():
    s = TrainStream(_loaders({"a": 6, "b": 2}), "round_robin")
    seen_b = [int(b["inputs"]["b/x"].item()) for b, names, _ in s.epoch() if names == ("b",)]
    assert sorted(seen_b) == [0, 0, 0, 1, 1, 1]  # b's two samples, one pass after another
    seen_a = [int(b["inputs"]["a/x"].item()) for b, names, _ in s.epoch() if names == ("a",)]
    assert sorted(seen_a) == list(range(6))  # the largest dataset: exactly one pass per epoch


def test_proportional_and_temperature_probabilities():
    sizes = {"a": 90, "b": 10}
    p = TrainStream(_loaders(sizes), "proportional")
    assert p.probs == pytest.approx({"a": 0.9, "b": 0.1})
    assert len(p) == 100  # both definitions give the total: 90 / 0.9 == 10 / 0.1
    t = TrainStream(_loaders(sizes), "temperature", temperature=2.0)
    z = 90**0.5 + 10**0.5
    assert t.probs == pytest.approx({"a": 90**0.5 / z, "b": 10**0.5 / z})
    assert len(t) == math.ceil(90 / t.probs["a"] - 1e-9)
    assert TrainStream(_loaders(sizes), "temperature", temperature=1.0).probs == pytest.approx(p.probs)
    # draws follow the probabilities (2,000 draws: within 4 standard deviations)
    s = TrainStream(_loaders(sizes), "temperature", temperature=2.0, epoch_length=2000)
    counts = Counter(n for _, (n,), _ in s.epoch())
    sd = math.sqrt(2000 * t.probs["b"] * (1 - t.probs["b"]))
    assert abs(counts["b"] - 2000 * t.probs["b"]) < 4 * sd


def test_random_sampling_is_seeded():
    def order(seed):
        s = TrainStream(_loaders({"a": 5, "b": 5}), "proportional", seed=seed, epoch_length=40)
        return [n for _, n, _ in s.epoch()]

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_all_gives_mixed_batches_with_every_dataset():
    s = TrainStream(_loaders({"a": 4, "b": 2}, batch_size=2), "all")
    assert len(s) == 2  # largest: a's 2 batches of 2
    for batch, names, n in s.epoch():
        assert names == ("a", "b") and n == 4
        assert set(batch["inputs"]) == {"a/x", "b/x"} and set(batch["targets"]) == {"a/y", "b/y"}
    assert len(TrainStream(_loaders({"a": 4, "b": 2}, batch_size=2), "all", epoch_length="smallest")) == 1


def test_one_dataset_is_one_pass_per_epoch_whatever_the_sampling():
    s = TrainStream(_loaders({"a": 7}), "temperature", epoch_length="smallest", limit=5)
    assert len(s) == 5 and len(list(s.epoch())) == 5


# ---------------------------------------------------------------- validation
def test_tasks_are_resolved_against_their_own_dataset():
    plan = validate(compose(TWO))
    t = plan.tasks["outline_shape"]
    assert (t["dataset"], t["input_key"], t["target_key"]) == ("outlines", "outlines/image", "outlines/shape")
    assert plan.spec.inputs["outlines/image"].shape == (1, 12, 12)  # grayscale outlines
    assert plan.spec.inputs["image"].shape == (3, 16, 16)
    assert plan.used_datasets() == ["data", "outlines"]


def test_unknown_dataset_is_named():
    err = _problems([*TWO, "tasks.outline_size.dataset=outlinez"])
    assert "tasks.outline_size.dataset" in err and "'outlinez'" in err and "allowed: data, outlines" in err


def test_dataset_errors_name_their_own_key():
    err = _problems([*TWO, "datasets.outlines.style=dotted"])
    assert "datasets.outlines.style" in err and "data.style" not in err


def test_single_input_architecture_refuses_tasks_with_their_own_inputs():
    err = _problems([*TWO, "arch=hps"])
    assert "tasks.*.input" in err and "arch=hps" in err and "multi_input" in err
    assert "data:image" in err and "outlines:image" in err


def test_soft_sharing_needs_a_backbone_with_stages():
    @BACKBONES.register("flat_test")
    class Flat(Backbone):
        feature_map = False

        def __init__(self, input_spec):
            super().__init__()
            self.out_shape = (4,)

    try:
        err = _problems(["arch=mmoe", "backbone=mlp", "backbone.name=flat_test", "tasks.segmentation.enabled=false"])
        assert "backbone.name" in err and "cannot be cut into stages" in err and "flat_test" in err
        assert "allowed:" in err and "small_cnn" in err
    finally:
        BACKBONES._items.pop("flat_test")


def test_expert_counts_that_do_not_fit_are_refused():
    err = _problems(["arch=dselect_k", "arch.k=9"])
    assert "arch.k" in err
    err = _problems(["arch=ple", "arch.levels=7"])
    assert "arch.levels" in err


def test_multi_input_stem_and_shared_backbone_checks():
    base = ["experiment=image_and_audio"]
    err = _problems([*base, "backbone=small_cnn"])
    assert "backbone.name" in err and "vectors" in err and "mlp" in err
    err = _problems([*base, "~arch.stems.signal"])
    assert "arch.stems" in err and "'audio/signal'" in err and "signal" in err
    err = _problems([*base, "arch.stems.signal.name=small_cnn"])
    assert "arch.stems.signal.name" in err and "small_cnn reads image inputs" in err
    err = _problems([*base, "+arch.stems.image.chanels=[4]"])
    assert "arch.stems.image.chanels" in err and "unknown key" in err


# ---------------------------------------------------------------- training
def test_a_batch_of_one_dataset_trains_only_its_tasks():
    plan = validate(compose(TWO))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    batch = with_prefix(plan.sources["outlines"].load()["train"], "outlines/").__getitems__(list(range(8)))
    preds = model(batch["inputs"])
    assert set(preds) == {"outline_shape", "outline_size"}  # the data task has no input here
    compute = LossComputer(tasks)
    assert compute.present(batch["targets"]) == [False, True, True]
    losses = compute(preds, batch["targets"], batch["masks"])
    assert losses[0].item() == 0.0 and (losses[1:] > 0).all()
    losses.sum().backward()
    assert all(p.grad is None for p in model.task_parameters("shape"))  # no gradient to the absent task
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared.parameters())


def test_two_inputs_trains_with_missing_labels_and_logs_per_dataset(tmp_path):
    overrides = [
        *TWO,
        "trainer.max_epochs=1",
        "trainer.batch_size=16",
        "logger.log_every=1",
        "+datasets.outlines.missing_labels.shape=0.5",
    ]
    summary = train(compose(overrides), tmp_path / "run")
    # round robin, largest: data has 6 batches of 16, drawn every other step
    assert summary["steps"] == 12
    for name in ("shape", "outline_shape", "outline_size"):
        assert all(math.isfinite(v) for v in summary["test"][name].values()), name
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r["split"] == "train"]
    assert len(train_recs) == 12
    # one dataset per step: the other dataset's tasks have no loss in that interval (NaN, written
    # as null), in turn
    assert train_recs[0]["loss/outline_shape"] is None and math.isfinite(train_recs[0]["loss/shape"])
    assert train_recs[1]["loss/shape"] is None and math.isfinite(train_recs[1]["loss/outline_shape"])
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["datasets"]["outlines"] == {"train": 32, "val": 16, "test": 16}
    assert data["sampling"]["probabilities"] == {"data": 0.5, "outlines": 0.5}


def test_sampling_all_gives_every_task_a_loss_each_step(tmp_path):
    overrides = [
        *TWO,
        "trainer.max_epochs=1",
        "trainer.batch_size=16",
        "logger.log_every=1",
        "trainer.sampling=all",
        "trainer.epoch_length=smallest",
    ]
    summary = train(compose(overrides), tmp_path / "run")
    assert summary["steps"] == 2  # outlines: 2 batches of 16
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in records if r["split"] == "train"):
        assert all(math.isfinite(r[f"loss/{t}"]) for t in ("shape", "outline_shape", "outline_size"))


# ---------------------------------------------------------------- per-input batch-norm statistics
def test_per_input_batch_norm_matches_batch_norm_and_keeps_statistics_apart():
    from mtl_cli.models.staged import PerInputBatchNorm

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    bn.weight.data.uniform_(0.5, 1.5)
    ref = torch.nn.BatchNorm2d(3)
    ref.load_state_dict(bn.state_dict())
    split = PerInputBatchNorm(bn, 2)
    assert split.weight is bn.weight and split.bias is bn.bias  # shared parameters, not copies
    a, b = torch.randn(8, 3, 4, 4), 5 + 3 * torch.randn(8, 3, 4, 4)
    split.index = 0
    assert torch.allclose(split(a), ref(a), atol=1e-6)  # training: batch statistics, same output
    split.index = 1
    split(b)
    assert torch.allclose(split.running_mean_0, ref.running_mean) and split.num_batches_tracked_0 == 1
    assert not torch.allclose(split.running_mean_1, split.running_mean_0)
    split.eval(), ref.eval()
    split.index = 0
    assert torch.allclose(split(b), ref(b), atol=1e-5)  # eval: input 0's own statistics


def test_two_inputs_keep_batch_norm_statistics_per_input():
    plan = validate(compose(TWO))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    assert model._norms and all(m.n == 2 for m in model._norms)
    shared_ids = {id(p) for p in model.shared_parameters()}
    assert all(id(m.weight) in shared_ids for m in model._norms)
    data = plan.sources["data"].load()["train"].__getitems__(list(range(16)))
    model.train()
    model.encode(data["inputs"])  # only input 0 (the colour images) ran
    first = model._norms[0]
    assert first.num_batches_tracked_0 == 1 and first.num_batches_tracked_1 == 0
    off = validate(compose([*TWO, "arch.norm_per_input=false"]))
    assert build_model(off, build_tasks(off))._norms == []
