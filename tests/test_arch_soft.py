"""Soft-sharing architectures (cross_stitch, nddr, mtan): their formulas against hand computations,
the exact shared/task parameter split, cross-task gradients, image/vector/signal backbones and
check(). Models come from the composed config (``arch=<name>``) on tiny shapes data."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.checks import component_problems
from mtl_cli.config.compose import compose
from mtl_cli.data.base import InputSpec
from mtl_cli.errors import ConfigError
from mtl_cli.models.base import ArchInfo, Backbone, ModelContext
from mtl_cli.registry import ARCHS, HEADS
from mtl_cli.validation import validate

ARCH_NAMES = ["cross_stitch", "nddr", "mtan"]
TINY = ["data.train_size=4", "data.val_size=4", "data.test_size=4", "trainer.progress=false"]
CNN = TINY + ["data.image_size=16", "backbone.channels=[8,16,16]"]


@functools.cache
def _plan(base: tuple[str, ...]):
    """Composed and validated once per base config (composing is the slow part)."""
    plan = validate(compose(list(base)))
    return plan, build_tasks(plan)


def build(arch: str, n_tasks: int | None = None, base=tuple(CNN), **keys):
    """``arch`` with ``keys`` on the composed ``base`` config, for its first ``n_tasks`` tasks."""
    plan, tasks = _plan(tuple(base))
    plan = dataclasses.replace(plan, cfg={**plan.cfg, "arch": {"name": arch, **keys}})
    torch.manual_seed(0)
    return build_model(plan, tasks[:n_tasks])


def image(b=2, size=16):
    return {"image": torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))}


def ids(params) -> list[int]:
    return [id(p) for p in params]


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_arch_option_composes_with_every_key_at_its_default(arch):
    plan = validate(compose(CNN + [f"arch={arch}"]))
    cls = ARCHS.get(arch)
    params = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert plan.cfg["arch"] == {"name": arch, **defaults}
    model = build_model(plan, build_tasks(plan))
    assert isinstance(model, cls) and cls.needs_stages and cls.single_input and not cls.shared_representation
    out = model(image())
    assert list(out) == ["shape", "size", "present", "segmentation"]
    assert out["segmentation"].shape == (2, 5, 16, 16)


# ---------------------------------------------------------------------------- cross-stitch


def test_cross_stitch_identity_alpha_gives_each_task_its_own_column():
    model = build("cross_stitch", init_self=1.0)
    x = image()
    rep = model.encode(x)
    assert list(rep) == ["shape", "size", "present", "segmentation"]
    assert model.unit_after == [0, 1] and model.mixes_task_parameters
    for t in model.task_names:
        alone = model.columns[t].run(x["image"])
        assert torch.equal(rep[t], alone), t
    out = model.decode(rep)
    assert list(out) == model.task_names
    assert torch.equal(out["size"], model.heads["size"](model.columns["size"].run(x["image"])))


def test_cross_stitch_default_alpha_and_hand_set_mix_follow_the_formula():
    model = build("cross_stitch")  # 4 tasks, init_self 0.9
    alpha = model.units["0"].alpha
    assert alpha.shape == (4, 4, 8)
    assert torch.allclose(alpha[:, :, 3], torch.full((4, 4), 0.1 / 3).fill_diagonal_(0.9))
    with torch.no_grad():
        for unit in model.units.values():
            unit.alpha.copy_(torch.randn(unit.alpha.shape, generator=torch.Generator().manual_seed(2)))
    x = image()["image"]
    cols = [model.columns[t] for t in model.task_names]
    xs = [x] * 4
    for s in range(3):
        xs = [c.stages[s](xi) for c, xi in zip(cols, xs)]
        if s in (0, 1):
            a = model.units[str(s)].alpha
            xs = [sum(a[t, u].view(1, -1, 1, 1) * xs[u] for u in range(4)) for t in range(4)]
    rep = model.encode({"image": x})
    for t, expected in zip(model.task_names, xs):
        assert torch.allclose(rep[t], expected, atol=1e-6)


def test_cross_stitch_chosen_stages_and_single_task():
    assert build("cross_stitch", stages=[2]).unit_after == [2]
    model = build("cross_stitch", stages=[])  # independent columns
    assert len(model.units) == 0 and not model.mixes_task_parameters
    one = build("cross_stitch", 1)
    assert len(one.units) == 0 and not one.mixes_task_parameters and one.parameter_groups()["shared"] == 0
    x = image()
    assert torch.equal(one.encode(x)["shape"], one.columns["shape"].run(x["image"]))


# ---------------------------------------------------------------------------- NDDR


def test_nddr_initialisation_and_hand_set_weights():
    model = build("nddr", 2, stages=[0])
    unit = model.units["0"]
    w = unit.reduce[1].weight[:, :, 0, 0]  # task "size": [C, 2C]
    assert torch.equal(w[:, 8:], 0.9 * torch.eye(8)) and torch.allclose(w[:, :8], 0.1 * torch.eye(8))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer, bn in zip(unit.reduce, unit.norms):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
    x = image(b=3)["image"]
    cols = [model.columns[t] for t in model.task_names]
    cat = torch.cat([c.stages[0](x) for c in cols], dim=1)
    expected = []
    for t, col in enumerate(cols):
        y = F.conv2d(cat, unit.reduce[t].weight)
        mean, var = y.mean(dim=(0, 2, 3), keepdim=True), y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        bn = unit.norms[t]
        y = (y - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        expected.append(col.run(torch.relu(y), start=1))
    rep = model.encode({"image": x})
    for t, e in zip(model.task_names, expected):
        assert torch.allclose(rep[t], e, atol=1e-5)


# ---------------------------------------------------------------------------- MTAN


def test_mtan_masks_forced_to_one_give_the_shared_features():
    model = build("mtan")
    x = image()
    shared = model.backbone.run(x["image"])
    rep = model.encode(x)
    assert not torch.allclose(rep["shape"], shared)  # default masks select
    assert model.attention["shape"][1].block[0].in_channels == 32  # cat[f_2, adapt(a_1)]
    assert model.attention["shape"][1].block[0].out_channels == 8  # hidden_ratio 0.5
    with torch.no_grad():
        for mods in model.attention.values():
            for att in mods:
                att.block[-1].weight.zero_()
                att.block[-1].bias.fill_(40.0)  # sigmoid(40) == 1.0 in float32
    rep = model.encode(x)
    for t in model.task_names:
        assert torch.equal(rep[t], shared), t


# ---------------------------------------------------------------------------- all three


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_parameter_partition_is_exact(arch):
    model = build(arch)
    groups = [ids(model.shared_parameters())] + [ids(model.task_parameters(t)) for t in model.task_names]
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat)) and set(flat) == set(ids(model.parameters()))
    assert sum(model.parameter_groups().values()) == sum(p.numel() for p in model.parameters())
    if arch == "mtan":
        assert set(groups[0]) == set(ids(model.backbone.parameters()))
    else:
        assert set(groups[0]) == set(ids(model.units.parameters()))
        column, head = model.columns["shape"].parameters(), model.heads["shape"].parameters()
        assert set(groups[1]) == set(ids(column)) | set(ids(head))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_another_tasks_loss_reaches_a_task_only_through_mixing(arch):
    model = build(arch, 2)
    out = model(image())
    own = list(model.task_parameters("shape"))
    grads = torch.autograd.grad(out["size"].square().sum(), own, allow_unused=True)
    norm = sum(float(g.abs().sum()) for g in grads if g is not None)
    assert model.mixes_task_parameters == (arch != "mtan")
    if arch == "mtan":
        assert norm == 0.0
    else:
        assert norm > 0.0
        assert all(g is None for g in grads[-2:])  # the head of "shape" never sees "size"'s loss


TABULAR = [
    "experiment=tabular",
    "backbone.hidden=[16,16]",
    "data.targets={a: a, b: b}",
    "+tasks.a.kind=regression",
    "+tasks.b.kind=classification",
    "trainer.progress=false",
]


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    rows = [",".join([f"f{i}" for i in range(7)] + ["a", "b"])]
    for r in range(20):
        rows.append(",".join([str((r * 7 + i) % 5) for i in range(7)] + [str(r / 10), "xyz"[r % 3]]))
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_vectors_from_the_mlp(arch, csv_path):
    model = build(arch, base=tuple(TABULAR + [f"data.path={csv_path}"]))
    first = model.backbone if arch == "mtan" else model.columns["a"]
    assert first.shapes == [(16,), (16,)]
    out = model({"features": torch.randn(4, 7)})
    assert out["a"].shape == (4, 1) and out["b"].shape == (4, 3)
    (out["a"].sum() + out["b"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_resnet18_stages(arch):
    model = build(arch, 2, base=tuple(TINY + ["data.image_size=32", "backbone=resnet18"]))
    first = model.backbone if arch == "mtan" else model.columns["shape"]
    assert first.names == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    out = model(image(2, 32))
    assert out["shape"].shape == (2, 4) and out["size"].shape == (2, 1)
    (out["shape"].sum() + out["size"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


class SignalNet(Backbone):
    """Two Conv1d stages on [B, 2, 24]; the second halves the length."""

    has_stages = True

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.a = nn.Sequential(nn.Conv1d(spec.shape[0], 6, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv1d(6, 10, 3, stride=2, padding=1), nn.ReLU())
        self.out_shape = (10, 12)

    def stages(self):
        return [("a", self.a), ("b", self.b)]

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_signal_maps(arch):
    _, tasks = _plan(tuple(CNN))
    ctx = ModelContext(
        tasks=tasks[:2],
        inputs={"image": InputSpec("signal", (2, 24), "signal")},
        make_backbone=SignalNet,
        make_head=lambda task, shape: HEADS.get("linear")(shape, task.out_features, None),
    )
    torch.manual_seed(0)
    model = ARCHS.get(arch)(ctx)
    rep = model.encode({"image": torch.randn(3, 2, 24)})
    assert all(r.shape == (3, 10, 12) for r in rep.values())
    out = model.decode(rep)
    assert out["shape"].shape == (3, 4)
    (out["shape"].sum() + out["size"].sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------- check()


def info(n_stages=3, n_tasks=2, stages=True):
    names = [f"block{i + 1}" for i in range(n_stages)] if stages else None
    return ArchInfo([f"t{i}" for i in range(n_tasks)], "small_cnn", names, {})


@pytest.mark.parametrize("arch", ["cross_stitch", "nddr"])
def test_check_refuses_bad_mixing_keys(arch):
    cls = ARCHS.get(arch)
    assert cls.check({"name": arch, "init_self": 0.9, "stages": None}, info()) == []
    assert cls.check({"name": arch, "init_self": 1.0, "stages": [2, 0]}, info()) == []
    assert cls.check({"name": arch, "init_self": 5.0, "stages": [9]}, info(stages=False)) == []  # not stageable
    node = {"name": arch, "init_self": 0.0, "stages": [0, 3]}
    problems = component_problems("arch", node, ARCHS) + cls.check(node, info())  # as validation reports them
    assert [p.key for p in problems] == ["arch.init_self", "arch.stages"]
    assert problems[0].value == 0.0 and problems[0].allowed == "a number > 0 and <= 1"
    assert problems[1].value == 3 and problems[1].allowed == "integers 0..2" and "block3" in problems[1].message
    assert problems[1].fix
    assert cls.check({"name": arch, "stages": [-1]}, info()) == []  # the annotation's: an integer >= 0
    assert [p.key for p in component_problems("arch", {"name": arch, "stages": [-1]}, ARCHS)] == ["arch.stages"]
    dup = cls.check({"name": arch, "stages": [1, 1]}, info())
    assert [p.key for p in dup] == ["arch.stages"] and dup[0].value == [1]
    few = cls.check({"name": arch, "stages": None}, info(n_stages=1))
    assert [p.key for p in few] == ["arch.stages"] and "arch.stages=[0]" in few[0].fix
    assert cls.check({"name": arch, "stages": None}, info(n_stages=1, n_tasks=1)) == []


def test_check_refuses_bad_hidden_ratio_and_building_refuses_bad_stages():
    assert component_problems("arch", {"name": "mtan", "hidden_ratio": 0.5}, ARCHS) == []
    problems = component_problems("arch", {"name": "mtan", "hidden_ratio": -1}, ARCHS)
    assert [p.key for p in problems] == ["arch.hidden_ratio"] and problems[0].value == -1
    with pytest.raises(ConfigError, match=r"arch\.stages"):
        build("nddr", stages=[3])  # small_cnn [8, 16, 16] has stages 0..2: the constructor refuses too
    with pytest.raises(ConfigError, match=r"arch\.init_self"):  # from validate(), or else from the build
        plan = validate(compose(CNN + ["arch=cross_stitch", "arch.init_self=1.5"]))
        build_model(plan, build_tasks(plan))
