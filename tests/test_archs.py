"""Every registered architecture, parametrized over the registry: it builds from config, its
parameters split exactly into shared and task-specific ones, gradients flow where the
architecture says they do, and it trains a few steps on the embedded data."""

from __future__ import annotations

import math

import pytest
import torch

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.compose import compose
from mtl_cli.data.base import PRIMARY, with_prefix
from mtl_cli.registry import ARCHS
from mtl_cli.tasks.base import LossComputer
from mtl_cli.train.api import train
from mtl_cli.train.sampling import merge
from mtl_cli.validation import validate

SMALL = ["trainer.progress=false", "backbone.channels=[8,16,16]"]
SHAPES = ["data.train_size=64", "data.val_size=32", "data.test_size=32", "data.image_size=16"]
OUTLINES = [
    "datasets.outlines.train_size=64",
    "datasets.outlines.val_size=32",
    "datasets.outlines.test_size=32",
    "datasets.outlines.image_size=12",
]
# a vector-only task set, so that the MLP backbone (no feature maps) can serve every architecture
VECTOR_TASKS = ["tasks.segmentation.enabled=false"]


AUDIO = [
    "datasets.audio.train_size=64",
    "datasets.audio.val_size=32",
    "datasets.audio.test_size=32",
    "datasets.audio.length=512",
    "arch.stems.image.channels=[8,16]",
    "+arch.stems.signal.channels=[8,16]",
    "arch.width=16",
    "backbone.hidden=[16]",
]


def overrides_for(name: str, backbone: str = "small_cnn") -> list[str]:
    cls = ARCHS.get(name)
    if not cls.single_input and backbone == "mlp":  # two modalities meeting in shared MLP layers
        return ["trainer.progress=false", *SHAPES, *AUDIO, "experiment=image_and_audio", f"arch={name}"]
    if not cls.single_input:
        return [*SMALL, *SHAPES, *OUTLINES, "experiment=two_inputs", f"arch={name}"]
    base = [*SHAPES, "trainer.progress=false", f"arch={name}"]
    if backbone == "mlp":
        return [*base, "backbone=mlp", "backbone.hidden=[32,16,16]", *VECTOR_TASKS]
    return [*base, "backbone.channels=[8,16,16]"]


def one_batch_of_each(plan, n: int = 8) -> dict:
    parts = []
    for d in plan.used_datasets():
        ds = with_prefix(plan.sources[d].load()["train"], "" if d == PRIMARY else f"{d}/")
        parts.append(ds.__getitems__(list(range(n))))
    return merge(parts)


def built(name: str, backbone: str = "small_cnn"):
    torch.manual_seed(0)
    plan = validate(compose(overrides_for(name, backbone)))
    tasks = build_tasks(plan)
    return plan, tasks, build_model(plan, tasks)


ALL = ARCHS.names()


def test_registry_has_every_architecture_of_the_issue():
    assert {"hps", "multi_input", "cross_stitch", "mtan", "mmoe", "cgc", "ple", "dselect_k"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("backbone", ["small_cnn", "mlp"])
def test_parameters_split_and_gradients_flow_as_declared(name, backbone):
    plan, tasks, model = built(name, backbone)
    model.train()
    params = {id(p): p for p in model.parameters()}
    shared = {id(p) for p in model.shared_parameters()}
    own = {t.name: {id(p) for p in model.task_parameters(t.name)} for t in tasks}
    # an exact partition: every parameter in exactly one group
    groups = [shared, *own.values()]
    assert sum(len(g) for g in groups) == len(params)
    assert set().union(*groups) == set(params)
    assert all(own[t.name] for t in tasks), "every task has parameters of its own (at least its head)"

    batch = one_batch_of_each(plan)
    preds = model(batch["inputs"])
    assert list(preds) == [t.name for t in tasks]
    losses = LossComputer(tasks)(preds, batch["targets"], batch["masks"])
    assert torch.isfinite(losses).all() and (losses > 0).all()

    plist = list(params.values())
    touched = {}
    for i, t in enumerate(tasks):
        grads = torch.autograd.grad(losses[i], plist, retain_graph=True, allow_unused=True)
        touched[t.name] = {id(p) for p, g in zip(plist, grads) if g is not None and g.abs().sum() > 0}
    for t in tasks:
        assert touched[t.name] & own[t.name], f"{t.name}'s loss trains its own parameters"
    # shared parameters are one set of tensors that every task's loss trains
    common = set.intersection(*touched.values())
    assert common & shared, "no shared parameter receives gradient from every task"
    if not model.mixes_task_parameters:
        assert common <= shared
    mixed = False
    for a in tasks:
        for b in tasks:
            if a is not b and touched[b.name] & own[a.name]:
                mixed = True
                assert model.mixes_task_parameters, f"{b.name}'s loss reaches {a.name}'s own parameters"
    if model.mixes_task_parameters:
        assert mixed, "an architecture that declares mixing must mix"


@pytest.mark.parametrize("name", ALL)
def test_every_architecture_trains_and_evaluates(name, tmp_path):
    """A few steps with missing labels (half the size labels; half the outline shapes) and, for
    several datasets, mixed batches (sampling=all)."""
    overrides = [*overrides_for(name), "debug=smoke", "trainer.limit_train_batches=4", "trainer.batch_size=16"]
    if ARCHS.get(name).single_input:
        overrides.append("+data.missing_labels.size=0.5")
    else:
        overrides += ["+datasets.outlines.missing_labels.shape=0.5", "trainer.sampling=all"]
    plan, tasks, model = built(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = train(compose(overrides), tmp_path / "run")
    assert summary["steps"] == 4
    for t in tasks:
        for metric, v in summary["test"][t.name].items():
            assert math.isfinite(v), (t.name, metric)
    g = summary["parameters"]
    assert g["shared"] == sum(p.numel() for p in model.shared_parameters())
    # the saved model differs from a fresh one built with the same seed: training changed it
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state.keys() == before.keys()
    assert any(not torch.equal(state[k], before[k]) for k in before if before[k].is_floating_point())


@pytest.mark.parametrize("name", [n for n in ALL if ARCHS.get(n).needs_stages])
def test_soft_sharing_on_a_torchvision_backbone(name):
    overrides = [
        *SHAPES,
        "data.image_size=32",
        "backbone=resnet18",
        f"arch={name}",
        "tasks.segmentation.enabled=false",
        "tasks.present.enabled=false",
    ]
    plan = validate(compose(overrides))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    batch = one_batch_of_each(plan, n=2)
    preds = model(batch["inputs"])
    assert preds["shape"].shape == (2, 4) and preds["size"].shape[0] == 2
    losses = LossComputer(tasks)(preds, batch["targets"], batch["masks"])
    losses.sum().backward()
    assert all(p.grad is not None for p in model.task_parameters("shape"))
