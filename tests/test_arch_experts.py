"""Expert-based architectures (mmoe, cgc, ple, dselect_k): gates, mixtures, parameter split,
gradient isolation, config checks, and image / signal / tabular / torchvision backbones."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL_DATA
from omegaconf import OmegaConf
from torch import nn

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.checks import component_problems
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import builtin_config_dir
from mtl_cli.config.typecheck import config_params
from mtl_cli.data.base import InputSpec, TargetSpec
from mtl_cli.errors import ConfigError
from mtl_cli.models.archs._experts import SHARED, DSelectKGate, smooth_step
from mtl_cli.models.base import ArchInfo, Backbone, ModelContext, pool, probe_shape
from mtl_cli.registry import ARCHS, BACKBONES, HEADS, TASK_KINDS
from mtl_cli.tasks.base import Task
from mtl_cli.validation import validate

ARCH_NAMES = ["mmoe", "cgc", "ple", "dselect_k"]
# 16x16 images, a small CNN of 3 stages (block1..3), two tasks: shape (4 classes) and size (regression)
IMAGE = SMALL_DATA + ["backbone.channels=[8,16,16]", "tasks.present.enabled=false", "tasks.segmentation.enabled=false"]
RESNET = [o for o in SMALL_DATA if not o.startswith("data.image_size")] + [
    "backbone=resnet18",
    "data.image_size=32",
    "tasks.present.enabled=false",
    "tasks.segmentation.enabled=false",
]
# PLE on the 2-stage MLP: no stem, one level per hidden layer (levels=2 needs 2 stages after the stem)
MLP_EXTRA = {"ple": ["arch.shared_stages=0"]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is as fast, and immune to CPU oversubscription
    (two spinning threads on a busy 2-core machine make each small conv ~50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory) -> str:
    """40 rows of 7 numeric features, a regression target ``a`` and a 3-class target ``b``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 7, generator=g)
    rows = [",".join([f"f{i}" for i in range(7)] + ["a", "b"])]
    for r in x.tolist():
        rows.append(",".join(f"{v:.4f}" for v in r) + f",{sum(r):.4f},{'xyz'[int(r[0] > 0) + int(r[1] > 0)]}")
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def mlp_overrides(csv_path: str) -> list[str]:
    return [
        "experiment=tabular",
        f"data.path={csv_path}",
        "data.targets={a: a, b: b}",
        "+tasks.a.kind=regression",
        "+tasks.b.kind=classification",
        "backbone.hidden=[16,16]",
        "trainer.progress=false",
    ]


@functools.cache
def _plan(overrides: tuple[str, ...]):
    return validate(compose(list(overrides)))


def build(overrides: list[str], seed: int = 0):
    """compose -> validate -> build_tasks -> build_model, seeded; returns (model, input key, input shape)."""
    plan = _plan(tuple(overrides))
    tasks = build_tasks(plan)
    torch.manual_seed(seed)
    model = build_model(plan, tasks)
    key = tasks[0].input
    return model, key, tuple(plan.spec.inputs[key].shape)


def setup(kind: str, arch: str, extra: list[str] = (), csv: str | None = None, batch: int = 4, seed: int = 0):
    """A model of ``arch`` on ``kind`` (image | mlp | resnet18) and a fixed random batch."""
    if kind == "image":
        o = IMAGE + [f"arch={arch}"]
    elif kind == "resnet18":
        o = RESNET + [f"arch={arch}"]
    else:
        o = mlp_overrides(csv) + [f"arch={arch}"] + MLP_EXTRA.get(arch, [])
    model, key, shape = build(o + list(extra), seed)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    return model, {key: x}


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return out.float().pow(2).mean()


def all_zero(params) -> bool:
    return all(p.grad is None or not p.grad.any() for p in params)


def any_nonzero(params) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def assert_distribution(w: torch.Tensor, batch: int, width: int) -> None:
    assert w.shape == (batch, width)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(batch), atol=1e-6, rtol=0)


def assert_exact_partition(model) -> None:
    every = {id(p) for p in model.parameters()}
    parts = [[id(p) for p in model.shared_parameters()]] + [
        [id(p) for p in model.task_parameters(t)] for t in model.task_names
    ]
    flat = [i for part in parts for i in part]
    assert len(flat) == len(set(flat)) == len(every)  # disjoint, no duplicates
    assert set(flat) == every
    groups = model.parameter_groups()
    assert sum(groups.values()) == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# registration, YAML, class attributes


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_registered_with_a_yaml_listing_every_key(name):
    cls = ARCHS.get(name)
    assert cls.__doc__ and "Shared" in cls.__doc__ and "Task-specific" in cls.__doc__ and "encode" in cls.__doc__
    assert (cls.single_input, cls.needs_stages, cls.shared_representation) == (True, True, False)
    path = Path(builtin_config_dir()) / "arch" / f"{name}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path))
    params = config_params(cls)
    assert node.pop("name") == name
    assert node == {k: default for k, (_, default) in params.items()}  # every key, at its default
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#") and not ln.startswith("name:")]
    assert len(lines) == len(params) and all("#" in ln for ln in lines)


# ---------------------------------------------------------------------------------------------
# gates and mixtures


@pytest.mark.parametrize("kind", ["image", "mlp"])
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_gate_weights_are_distributions_and_the_split_is_exact(arch, kind, csv_path):
    model, inputs = setup(kind, arch, csv=csv_path)
    widths = {"mmoe": 4, "dselect_k": 4, "cgc": 1 + 2, "ple": 1 + 2}[arch]
    levels = model.gate_weights(inputs)
    assert len(levels) == (2 if arch == "ple" else 1)
    for i, gates in enumerate(levels):
        for t in model.task_names:
            assert_distribution(gates[t], 4, widths)
        if arch == "ple" and i == 0:
            assert_distribution(gates[SHARED], 4, 2 * 1 + 2)  # every task's experts, then the shared ones
        else:
            assert SHARED not in gates
    assert_exact_partition(model)
    out = model(inputs)
    assert list(out) == model.task_names
    assert model.mixes_task_parameters == (arch == "ple")
    sum(loss_of(y) for y in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())  # no unused parameters (dropped stem copies)


@pytest.mark.parametrize("kind", ["image", "mlp"])
def test_mmoe_output_is_the_gate_weighted_sum_of_the_experts(kind, csv_path):
    model, inputs = setup(kind, "mmoe", csv=csv_path)
    model.eval()
    x = next(iter(inputs.values()))
    with torch.no_grad():
        stem = model.stem(x)
        experts = [e(stem) for e in model.experts]
        rep = model.encode(inputs)
        for t in model.task_names:
            w = torch.softmax(model.gates[t].fc(pool(stem)), -1)
            expected = sum(w[:, e].reshape(-1, *[1] * (experts[e].dim() - 1)) * experts[e] for e in range(4))
            torch.testing.assert_close(rep[t], expected)
            torch.testing.assert_close(model.decode(rep)[t], model.heads[t](expected))
        # the tasks' gates differ, so their mixtures do too
        a, b = model.task_names
        assert not torch.allclose(rep[a], rep[b])


def test_mmoe_with_one_expert_is_stem_then_expert_ie_the_plain_backbone():
    model, inputs = setup("image", "mmoe", ["arch.num_experts=1"], seed=3)
    plan = _plan(tuple(IMAGE + ["arch=mmoe", "arch.num_experts=1"]))
    torch.manual_seed(3)  # the first backbone copy is built first: same initial weights
    backbone = BACKBONES.get("small_cnn")(plan.spec.inputs["image"], channels=[8, 16, 16])
    model.eval()
    backbone.eval()
    x = inputs["image"]
    with torch.no_grad():
        rep = model.encode(inputs)
        assert [len(model.stem.stages), len(model.experts), len(model.experts[0].stages)] == [1, 1, 2]
        for t in model.task_names:
            assert torch.equal(model.gate_weights(inputs)[0][t], torch.ones(4, 1))
            torch.testing.assert_close(rep[t], model.experts[0](model.stem(x)), rtol=0, atol=0)
            torch.testing.assert_close(rep[t], backbone(x))


@pytest.mark.parametrize("kind", ["image", "mlp"])
def test_shared_stages_0_gates_read_the_pooled_raw_input(kind, csv_path):
    arch_extra = ["arch.shared_stages=0"]
    model, inputs = setup(kind, "mmoe", arch_extra, csv=csv_path)
    x = next(iter(inputs.values()))
    assert len(model.stem.stages) == 0 and not list(model.stem.parameters())
    for t in model.task_names:
        assert model.gates[t].fc.in_features == (3 if kind == "image" else 7)  # channels / features
        with torch.no_grad():
            torch.testing.assert_close(model.gate_weights(inputs)[0][t], torch.softmax(model.gates[t].fc(pool(x)), -1))
    assert model(inputs)[model.task_names[0]].shape[0] == 4


# ---------------------------------------------------------------------------------------------
# DSelect-k


def test_smooth_step_values():
    t = torch.tensor([-5.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 5.0])
    s = smooth_step(t, 1.0)
    assert s[:3].tolist() == [0.0, 0.0, 0.0] and s[-3:].tolist() == [1.0, 1.0, 1.0]
    assert s[4].item() == 0.5
    torch.testing.assert_close(s[3] + s[5], torch.tensor(1.0))  # symmetric about (0, 1/2)
    assert s[3].item() == pytest.approx(-2 * (-0.25) ** 3 + 1.5 * -0.25 + 0.5)
    assert (s.diff() >= 0).all()
    assert smooth_step(torch.tensor([0.2]), 0.4).item() == 1.0  # gamma sets the width


def saturate(gate: DSelectKGate, chosen: list[int], alpha: list[float], scale: float = 10.0) -> None:
    """Set selector i's code logits to +-scale*gamma (bias only) so that it picks expert chosen[i]."""
    with torch.no_grad():
        gate.z.weight.zero_()
        bias = [scale * gate.gamma * (1 if (e >> j) & 1 else -1) for e in chosen for j in range(gate.m)]
        gate.z.bias.copy_(torch.tensor(bias))
        gate.alpha.weight.zero_()
        gate.alpha.bias.copy_(torch.tensor(alpha))


def test_dselect_k_gate_is_exactly_sparse_when_the_codes_saturate():
    torch.manual_seed(0)
    gate = DSelectKGate((16,), n=4, k=2, gamma=1.0)
    x = torch.randn(5, 16)
    assert gate.m == 2
    w = gate(x)  # at init: every selector near uniform
    assert_distribution(w, 5, 4)
    torch.testing.assert_close(w, torch.full((5, 4), 0.25), atol=0.05, rtol=0)
    saturate(gate, [1, 2], [0.3, -0.2])
    w = gate(x)
    a = torch.softmax(torch.tensor([0.3, -0.2]), 0)
    assert torch.equal(w, torch.tensor([[0.0, a[0], a[1], 0.0]]).expand(5, 4))
    assert ((w > 0).sum(-1) <= 2).all()
    saturate(gate, [3, 3], [0.3, -0.2])  # both selectors on one expert: exactly one-hot
    assert torch.equal(gate(x), torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(5, 4))


@pytest.mark.parametrize("n,k", [(3, 2), (5, 3), (6, 1)])
def test_dselect_k_with_a_number_of_experts_that_is_not_a_power_of_two(n, k):
    torch.manual_seed(0)
    gate = DSelectKGate((4, 6, 6), n=n, k=k, gamma=1.0)  # pooled image maps of 4 channels
    x = torch.randn(3, 4, 6, 6)
    assert_distribution(gate(x), 3, n)  # renormalised over the n valid experts
    with torch.no_grad():
        gate.z.weight.normal_(0, 3.0)  # some selectors saturate, some on unused codes
        gate.z.bias.normal_(0, 3.0)
    assert_distribution(gate(x), 3, n)
    chosen = [n - 1 - i for i in range(k)]
    saturate(gate, chosen, [0.1 * i for i in range(k)])
    w = gate(x)
    assert_distribution(w, 3, n)
    assert set(w[0].nonzero().flatten().tolist()) == set(chosen) and ((w > 0).sum(-1) <= k).all()


def test_dselect_k_selector_saturated_on_an_unused_code_falls_back_to_a_valid_expert():
    gate = DSelectKGate((8,), n=3, k=1, gamma=1.0)
    saturate(gate, [3], [0.0])  # code 3 = 0b11 does not exist with 3 experts
    w = gate(torch.randn(2, 8))
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 0.0]]).expand(2, 3))  # top bit cleared: expert 1


def test_dselect_k_one_expert_and_gradients():
    gate = DSelectKGate((8,), n=1, k=1, gamma=1.0)
    assert gate.z is None and torch.equal(gate(torch.randn(2, 8)), torch.ones(2, 1))
    gate = DSelectKGate((8,), n=4, k=2, gamma=1.0)
    (gate(torch.randn(3, 8)) * torch.arange(4.0)).sum().backward()
    assert gate.z.weight.grad.abs().sum() > 0 and gate.alpha.weight.grad.abs().sum() > 0


def test_dselect_k_model_mixes_exactly_the_selected_experts():
    model, inputs = setup("image", "dselect_k", ["arch.num_experts=3", "arch.k=2"])
    a, b = model.task_names
    saturate(model.gates[a], [0, 2], [0.5, 0.0])
    model.eval()
    with torch.no_grad():
        w = model.gate_weights(inputs)[0]
        assert_distribution(w[b], 4, 3)
        assert (w[a][:, 1] == 0).all() and ((w[a] > 0).sum(-1) == 2).all()
        stem = model.stem(inputs["image"])
        e0, e2 = model.experts[0](stem), model.experts[2](stem)
        s = torch.softmax(torch.tensor([0.5, 0.0]), 0)
        torch.testing.assert_close(model.encode(inputs)[a], s[0] * e0 + s[1] * e2)


# ---------------------------------------------------------------------------------------------
# CGC and PLE


def test_cgc_gate_mixes_the_tasks_own_and_the_shared_experts():
    model, inputs = setup("image", "cgc", ["arch.num_task_experts=2", "arch.num_shared_experts=3"])
    level = model.levels[0]
    a, b = model.task_names
    assert len(level.shared_experts) == 3 and len(level.task_experts[a]) == len(level.task_experts[b]) == 2
    model.eval()
    gates = model.gate_weights(inputs)[0]
    assert_distribution(gates[a], 4, 2 + 3)
    assert level.gates[a].fc.out_features == 5
    # task a's parameters: its 2 experts (2 stages each), its gate and its head
    expert = sum(p.numel() for p in level.shared_experts[0].parameters())
    head = sum(p.numel() for p in model.heads[a].parameters())
    gate = sum(p.numel() for p in level.gates[a].parameters())
    assert model.parameter_groups()[a] == 2 * expert + gate + head
    assert model.parameter_groups()["shared"] == sum(p.numel() for p in model.stem.parameters()) + 3 * expert
    # the mixture: own experts first, then the shared ones
    with torch.no_grad():
        stem = model.stem(inputs["image"])
        outs = [e(stem) for e in level.task_experts[a]] + [e(stem) for e in level.shared_experts]
        expected = sum(gates[a][:, i, None, None, None] * o for i, o in enumerate(outs))
        torch.testing.assert_close(model.encode(inputs)[a], expected)


def test_cgc_allows_no_task_experts():
    model, inputs = setup("image", "cgc", ["arch.num_task_experts=0", "arch.num_shared_experts=1"])
    assert_distribution(model.gate_weights(inputs)[0][model.task_names[0]], 4, 1)
    assert_exact_partition(model)


def test_ple_with_one_level_is_cgc():
    cgc, inputs = setup("image", "cgc", seed=5)
    ple, _ = setup("image", "ple", ["arch.levels=1"], seed=5)
    assert ple.parameter_groups() == cgc.parameter_groups()
    assert not ple.mixes_task_parameters
    cgc.eval()
    ple.eval()
    with torch.no_grad():
        for t, y in ple.encode(inputs).items():
            torch.testing.assert_close(y, cgc.encode(inputs)[t])  # same seed, same build order
    a, b = ple.task_names
    loss_of(ple(inputs)[b]).backward()
    assert all_zero(ple.task_parameters(a))
    assert any_nonzero(ple.task_parameters(b)) and any_nonzero(ple.shared_parameters())


def test_ple_two_levels_task_a_experts_learn_from_task_b():
    model, inputs = setup("image", "ple")
    a, b = model.task_names
    first, last = model.levels
    assert model.mixes_task_parameters
    assert [e.names for e in first.shared_experts] == [["block2"], ["block2"]]
    assert [e.names for e in last.task_experts[a]] == [["block3"]]
    assert first.shared_gate is not None and last.shared_gate is None
    loss_of(model(inputs)[b]).backward()
    assert any_nonzero(first.task_experts[a].parameters())  # through the shared gate
    assert all_zero(first.gates[a].parameters()) and all_zero(last.task_experts[a].parameters())
    assert all_zero(last.gates[a].parameters()) and all_zero(model.heads[a].parameters())
    assert any_nonzero(first.shared_gate.parameters())
    assert_exact_partition(model)


def test_ple_shared_input_is_the_shared_gate_mixture_of_every_expert():
    model, inputs = setup("image", "ple")
    model.eval()
    first, last = model.levels
    a, b = model.task_names
    with torch.no_grad():
        x = model.stem(inputs["image"])
        everyone = [e(x) for t in (a, b) for e in first.task_experts[t]] + [e(x) for e in first.shared_experts]
        w = first.shared_gate(x)
        shared_in = sum(w[:, i, None, None, None] * o for i, o in enumerate(everyone))
        task_in = {}
        for t in (a, b):
            own = [e(x) for e in first.task_experts[t]] + [e(x) for e in first.shared_experts]
            g = first.gates[t](x)
            task_in[t] = sum(g[:, i, None, None, None] * o for i, o in enumerate(own))
        shared_out = [e(shared_in) for e in last.shared_experts]
        rep = model.encode(inputs)
        for t in (a, b):
            own = [e(task_in[t]) for e in last.task_experts[t]] + shared_out
            g = last.gates[t](task_in[t])
            torch.testing.assert_close(rep[t], sum(g[:, i, None, None, None] * o for i, o in enumerate(own)))


@pytest.mark.parametrize("arch", ["mmoe", "cgc", "dselect_k"])
def test_other_tasks_loss_gives_no_gradient_to_a_tasks_own_parameters(arch):
    model, inputs = setup("image", arch)
    a, b = model.task_names
    loss_of(model(inputs)[b]).backward()
    assert all_zero(model.levels[0].gates[a].parameters()) and all_zero(model.heads[a].parameters())
    assert all_zero(model.task_parameters(a))
    assert any_nonzero(model.levels[0].gates[b].parameters()) and any_nonzero(model.heads[b].parameters())
    assert any_nonzero(model.shared_parameters())
    assert not model.mixes_task_parameters


# ---------------------------------------------------------------------------------------------
# other backbones: torchvision resnet18, 1-D signal maps

RESNET_COUNTS = {
    "mmoe": ["arch.num_experts=2"],
    "cgc": ["arch.num_shared_experts=1"],
    "ple": ["arch.num_shared_experts=1"],
    "dselect_k": ["arch.num_experts=2"],
}


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_resnet18(arch):
    model, inputs = setup("resnet18", arch, RESNET_COUNTS[arch], batch=2)
    assert model.stem.names == ["conv1"]
    if arch == "ple":  # 4 stages after the stem, 2 levels: [layer1, layer2], [layer3, layer4]
        assert [lv.shared_experts[0].names for lv in model.levels] == [["layer1", "layer2"], ["layer3", "layer4"]]
    out = model(inputs)
    assert out["shape"].shape == (2, 4) and out["size"].shape == (2, 1)
    assert model.final_shape == (512, 1, 1)
    for gates in model.gate_weights(inputs):
        for w in gates.values():
            assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(2))
    sum(loss_of(y) for y in out.values()).backward()
    assert any_nonzero(model.stem.parameters())
    assert_exact_partition(model)


class TinySignalNet(Backbone):
    """Three Conv1d stages on [B, C, L] signals (no registered signal backbone needed)."""

    feature_map = True
    has_stages = True

    def __init__(self, spec: InputSpec):
        super().__init__()
        c = spec.shape[0]
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv1d(c, 6, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv1d(6, 8, 3, stride=2, padding=1), nn.BatchNorm1d(8), nn.ReLU()),
            nn.Sequential(nn.Conv1d(8, 10, 3, stride=2, padding=1), nn.ReLU()),
        )
        self.out_shape = probe_shape(self.blocks, tuple(spec.shape))

    def stages(self):
        return [(f"block{i + 1}", m) for i, m in enumerate(self.blocks)]

    def forward(self, x):
        return self.blocks(x)


def signal_ctx(task_names=("a", "b", "c")) -> ModelContext:
    spec = InputSpec("signal", (2, 20), "signal")
    tasks = [
        Task(
            name=n,
            kind=TASK_KINDS.get("regression")(),
            input="signal",
            target=n,
            spec=TargetSpec(n, "regression"),
            loss_name="mse",
            metric_names=["mae"],
            primary_metric="mae",
            head={"name": "linear"},
        )
        for n in task_names
    ]
    return ModelContext(
        tasks=tasks,
        inputs={"signal": spec},
        make_backbone=TinySignalNet,
        make_head=lambda task, shape: HEADS.get("linear")(shape, task.out_features, None),
    )


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_signal_maps(arch):
    torch.manual_seed(0)
    model = ARCHS.get(arch)(signal_ctx())
    inputs = {"signal": torch.randn(3, 2, 20)}
    assert model.final_shape == (10, 5)
    rep = model.encode(inputs)
    assert all(rep[t].shape == (3, 10, 5) for t in "abc")
    assert all(y.shape == (3, 1) for y in model.decode(rep).values())
    for gates in model.gate_weights(inputs):
        for w in gates.values():
            assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(3))
    assert model.mixes_task_parameters == (arch == "ple")
    assert_exact_partition(model)


# ---------------------------------------------------------------------------------------------
# config checks

INFO = ArchInfo(
    task_names=["a", "b"],
    backbone="small_cnn",
    stages=["block1", "block2", "block3"],
    inputs={"image": InputSpec("image", (3, 16, 16))},
)

BAD = [  # arch, node, the key named, its value (a key's own domain is its annotation's, the rest check()'s)
    ("mmoe", {"num_experts": 0}, "arch.num_experts", 0),
    ("mmoe", {"shared_stages": 3}, "arch.shared_stages", 3),
    ("mmoe", {"shared_stages": -1}, "arch.shared_stages", -1),
    ("cgc", {"num_shared_experts": 0}, "arch.num_shared_experts", 0),
    ("cgc", {"num_task_experts": -1}, "arch.num_task_experts", -1),
    ("cgc", {"shared_stages": 5}, "arch.shared_stages", 5),
    ("ple", {"levels": 0}, "arch.levels", 0),
    ("ple", {"levels": 3}, "arch.levels", 3),  # 2 stages after a 1-stage stem
    ("ple", {"shared_stages": 2}, "arch.levels", 2),  # default levels=2, 1 stage left
    ("ple", {"num_shared_experts": 0}, "arch.num_shared_experts", 0),
    ("dselect_k", {"num_experts": 0, "k": 1}, "arch.num_experts", 0),
    ("dselect_k", {"k": 5}, "arch.k", 5),
    ("dselect_k", {"num_experts": 3, "k": 0}, "arch.k", 0),
    ("dselect_k", {"gamma": 0.0}, "arch.gamma", 0.0),
    ("dselect_k", {"gamma": -1}, "arch.gamma", -1),
    ("dselect_k", {"shared_stages": 3}, "arch.shared_stages", 3),
]


@pytest.mark.parametrize("arch,node,key,value", BAD)
def test_validation_refuses_and_names_the_key(arch, node, key, value):
    """What validation reports: the annotations' problems, then check()'s (each problem once)."""
    node = {"name": arch, **node}
    problems = component_problems("arch", node, ARCHS) + ARCHS.get(arch).check(node, INFO)
    assert [(p.key, p.value) for p in problems] == [(key, value)]
    assert problems[0].allowed and key in problems[0].fix


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_check_accepts_defaults_and_skips_unstageable_backbones(arch):
    cls = ARCHS.get(arch)
    assert cls.check({"name": arch}, INFO) == []
    assert cls.check({"name": arch, "shared_stages": 0}, INFO) == []
    if arch in ("cgc", "ple"):
        assert cls.check({"name": arch, "num_task_experts": 0, "num_shared_experts": 1}, INFO) == []
    bad = {"name": arch, "shared_stages": 9, "num_experts": 0, "levels": 0, "k": 0, "gamma": 0}
    assert cls.check(bad, ArchInfo(["a"], "x", None, INFO.inputs)) == []


def test_ple_levels_fit_the_stages_left():
    cls = ARCHS.get("ple")
    assert cls.check({"name": "ple", "shared_stages": 0, "levels": 3}, INFO) == []
    assert cls.check({"name": "ple", "shared_stages": 1, "levels": 2}, INFO) == []
    [p] = cls.check({"name": "ple", "shared_stages": 0, "levels": 4}, INFO)
    assert p.key == "arch.levels" and p.allowed == "1..3"


def test_building_a_refused_config_raises_a_config_error_naming_the_key():
    cfg = compose(IMAGE + ["arch=ple", "arch.levels=3"])
    with pytest.raises(ConfigError, match=r"arch\.levels"):
        plan = validate(cfg)  # validation may already refuse it (arch check), else the build does
        build_model(plan, build_tasks(plan))
    with pytest.raises(ConfigError, match=r"arch\.k"):
        ARCHS.get("dselect_k")(signal_ctx(), num_experts=2, k=3)


def test_models_are_deterministic_per_seed():
    a, inputs = setup("image", "dselect_k", seed=7)
    b, _ = setup("image", "dselect_k", seed=7)
    a.eval()
    b.eval()
    with torch.no_grad():
        for t, y in a(inputs).items():
            assert torch.equal(y, b(inputs)[t])
    assert math.isfinite(sum(p.sum().item() for p in a.parameters()))
