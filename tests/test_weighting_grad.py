"""Gradient-based weighting methods and the gradient engine: known answers, agreement with
torchjd's implementations (a test-only dependency), and the engine's update rules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mtl_cli.registry import WEIGHTINGS
from mtl_cli.weighting.base import BackwardContext
from mtl_cli.weighting.engine import GradientWeighting, jacobian
from mtl_cli.weighting.imtl_g import imtl_g_weights
from mtl_cli.weighting.mgda import min_norm_weights
from mtl_cli.weighting.pcgrad import pcgrad_weights

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as A  # noqa: E402

GRADIENT_METHODS = [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), GradientWeighting)]


def random_matrices(n_cases=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for i in range(n_cases):
        t, p = [2, 3, 5, 8][i % 4], 12
        yield torch.randn(t, p, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- known answers
def test_mgda_two_tasks_closed_form():
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(min_norm_weights(G @ G.T), torch.tensor([0.5, 0.5]))
    G = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # w1 = (g2 - g1).g2 / |g1 - g2|^2 = (-1 + 1) / 2 = 0
    w = min_norm_weights(G @ G.T)
    assert torch.allclose(w, torch.tensor([0.0, 1.0]), atol=1e-6)
    # one gradient inside the other's half-space and shorter: the shorter one is the min norm point
    G = torch.tensor([[1.0, 0.0], [3.0, 0.1]])
    assert torch.allclose(min_norm_weights(G @ G.T), torch.tensor([1.0, 0.0]), atol=1e-6)


def test_mgda_weights_on_simplex_and_direction_is_common_descent():
    for G in random_matrices():
        w = min_norm_weights(G @ G.T).double()
        assert w.min() >= 0 and abs(float(w.sum()) - 1) < 1e-6
        d = w @ G
        # optimality on the simplex: g_t . d >= |d|^2 for every task (float32 round-off)
        assert (G @ d >= d @ d - 1e-5 * (1 + d @ d)).all()


def test_pcgrad_on_hand_made_conflicting_vectors():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    w = pcgrad_weights(G @ G.T, [[1], [0]])
    # g1' = g1 + g2/2 = (0.5, 0.5); g2' = g2 + g1 = (0, 1); sum (0.5, 1.5)
    assert torch.allclose(w @ G, torch.tensor([0.5, 1.5], dtype=torch.float64))
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # no conflict: the plain sum
    assert torch.allclose(pcgrad_weights(G @ G.T, [[1], [0]]), torch.ones(2, dtype=torch.float64))


def test_imtl_g_gives_equal_projections_on_unit_gradients():
    for G in random_matrices():
        w = imtl_g_weights(G @ G.T)
        d = w @ G
        proj = (G / G.norm(dim=1, keepdim=True)) @ d
        assert torch.allclose(proj, proj[0].expand_as(proj), rtol=1e-6, atol=1e-8)
        assert abs(float(w.sum()) - 1) < 1e-9


# ---------------------------------------------------------------- agreement with torchjd
def test_mgda_agrees_with_torchjd():
    """Same convex problem: ours is solved exactly (active set), torchjd's by Frank-Wolfe stopped at
    a tolerance, so ours is never worse and torchjd's norm is within 5% of ours."""
    ref = A.MGDA()
    for G in random_matrices():
        ours = min_norm_weights((G @ G.T).float()).double() @ G
        theirs = ref(G.float()).double()
        assert float(ours.norm()) <= float(theirs.norm()) * (1 + 1e-5) + 1e-6
        assert float(theirs.norm()) <= float(ours.norm()) * 1.05


def test_pcgrad_agrees_with_torchjd_on_two_tasks():
    ref = A.PCGrad()
    for G in random_matrices():
        G = G[:2]
        ours = pcgrad_weights(G @ G.T, [[1], [0]]) @ G
        assert torch.allclose(ours.float(), ref(G.float()), rtol=1e-4, atol=1e-5)


def test_imtl_g_agrees_with_torchjd():
    ref = A.IMTLG()
    for G in random_matrices():
        ours = imtl_g_weights(G @ G.T) @ G
        theirs = ref(G.float()).double()
        # torchjd scales IMTL-G's update differently: compare directions
        cos = float(ours @ theirs / (ours.norm() * theirs.norm()))
        assert cos > 1 - 1e-4


# ---------------------------------------------------------------- the engine
class TwoHeads(nn.Module):
    """A shared linear encoder and two linear heads: small enough to compute every gradient by hand."""

    shared_representation = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
        self.task_names = ["a", "b"]

    def encode(self, x):
        return self.enc(x)

    def shared_parameters(self):
        return self.enc.parameters()

    def task_parameters(self, t):
        return self.heads[t].parameters()

    def losses(self, x, y):
        z = self.encode(x)
        return z, torch.stack([((self.heads[t](z).squeeze(1) - y[:, i]) ** 2).mean() for i, t in enumerate("ab")])


def _ctx(model, z, step=0, present=None, skip=None):
    return BackwardContext(
        model=model,
        backward=lambda total, inputs=None: total.backward(inputs=inputs),
        step=step,
        present=present,
        rep=z,
        grad_scale=1.0,
        skip_step=skip,
    )


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_engine_applies_weights_to_shared_and_own_loss_to_heads(name):
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    shared = list(model.shared_parameters())
    G = jacobian(losses, shared, [0, 1])
    method = WEIGHTINGS.get(name)(["a", "b"], [1.0, 1.0])
    w = method.backward(losses, _ctx(model, z))
    expected = w.to(G.dtype) @ G if not math.isnan(float(w[0])) else None
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    if expected is not None and method.source == "params":
        assert torch.allclose(got, expected, atol=1e-6)
    # each head: the gradient of its own loss, unweighted
    z2, losses2 = model.losses(x, y)
    for i, t in enumerate("ab"):
        ref = torch.autograd.grad(losses2[i], list(model.heads[t].parameters()), retain_graph=True)
        for p, r in zip(model.heads[t].parameters(), ref):
            assert torch.allclose(p.grad, r, atol=1e-6)


def test_representation_source_backpropagates_the_aggregated_rep_gradient():
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    Gz = jacobian(losses, [z], [0, 1])
    method = WEIGHTINGS.get("mgda")(["a", "b"], [1.0, 1.0], source="rep")
    w = method.backward(losses, _ctx(model, z))
    d = (w.to(Gz.dtype) @ Gz).reshape_as(z)
    z2, _ = model.losses(x, y)
    ref = torch.autograd.grad(z2, list(model.enc.parameters()), grad_outputs=d)
    for p, r in zip(model.enc.parameters(), ref):
        assert torch.allclose(p.grad, r, atol=1e-6)


def test_every_k_reuses_the_weights():
    model = TwoHeads()
    x, y = _data()
    method = WEIGHTINGS.get("mgda")(["a", "b"], [1.0, 1.0], every=3)
    z, losses = model.losses(x, y)
    w0 = method.backward(losses, _ctx(model, z, step=0))
    for step in (1, 2):
        model.zero_grad()
        x2 = x + 0.5 * step
        z, losses = model.losses(x2, y)
        assert torch.equal(method.backward(losses, _ctx(model, z, step=step)), w0)
        G = jacobian(model.losses(x2, y)[1], list(model.shared_parameters()), [0, 1])
        got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
        assert torch.allclose(got, w0 @ G, atol=1e-6)
    z, losses = model.losses(x + 3, y)
    model.zero_grad()
    assert not torch.equal(method.backward(losses, _ctx(model, z, step=3)), w0)  # recomputed at step k


def test_absent_task_gets_weight_zero():
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    losses = torch.stack([losses[0], torch.zeros((), requires_grad=False)])  # task b has no data
    present = torch.tensor([1.0, 0.0])
    w = WEIGHTINGS.get("mgda")(["a", "b"], [1.0, 1.0]).backward(losses, _ctx(model, z, present=present))
    assert w.tolist() == [1.0, 0.0]


def test_non_finite_task_gradient_skips_the_step_and_names_the_task():
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    losses = torch.stack([losses[0], losses[1] * float("inf")])
    why = []
    w = WEIGHTINGS.get("pcgrad")(["a", "b"], [1.0, 1.0]).backward(losses, _ctx(model, z, skip=why.append))
    # b's inf also reaches a's row through the shared graph (0 x inf): both are named
    assert why and "b" in why[0]
    assert torch.isnan(w).all()


def test_rep_source_is_refused_for_architectures_without_one_representation():
    from mtl_cli.config.compose import compose
    from mtl_cli.errors import ConfigError
    from mtl_cli.validation import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(["weighting=mgda_ub", "arch=mtan"]))
    assert "weighting.source" in err.value.render() and "set weighting.source=params" in err.value.render()
    validate(compose(["weighting=mgda_ub"]))  # hps has one shared representation


#: one method of each family trains in the default suite (static: the default; ew: no weights;
#: famo: a stateful loss-based method; upgrad: a Gramian aggregator on the parameters; mgda_ub: the
#: representation source); the rest of the registry with -m slow
TRAINS_IN_THE_DEFAULT_SUITE = ("static", "ew", "famo", "upgrad", "mgda_ub")


@pytest.mark.parametrize(
    "name",
    [n if n in TRAINS_IN_THE_DEFAULT_SUITE else pytest.param(n, marks=pytest.mark.slow) for n in WEIGHTINGS.names()],
)
def test_every_weighting_method_trains_the_default_experiment(name, tmp_path):
    """Every registered method, loss-based or gradient-based (parametrized over the registry; the
    methods outside TRAINS_IN_THE_DEFAULT_SUITE are slow)."""
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    overrides = [
        f"weighting={name}",
        "data.train_size=320",
        "data.val_size=32",
        "data.test_size=32",
        "data.image_size=16",
        "backbone.channels=[8,16,16]",
        "trainer.progress=false",
        "trainer.max_epochs=2",
        "trainer.batch_size=32",
        "logger.log_every=5",
        "scheduler=constant",
    ]
    summary = train(compose(overrides), tmp_path / "run")
    assert summary["steps"] == 20
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    first, last = train_recs[0], train_recs[-1]
    mean = lambda r: sum(r[f"loss/{t}"] for t in ("shape", "size", "present", "segmentation")) / 4  # noqa: E731
    assert mean(last) < mean(first)  # the loss goes down on a fixed seed
    assert all(math.isfinite(v) for v in summary["test"]["shape"].values())


# ---------------------------------------------------------------- composition
def test_composed_log_transform_then_mgda_equals_mgda_on_log_loss_gradients():
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    shared = list(model.shared_parameters())
    G = jacobian(losses, shared, [0, 1])
    G_log = G / losses.detach()[:, None]  # the gradient of log L_t is g_t / L_t
    expected = min_norm_weights(G_log @ G_log.T) @ G_log
    method = WEIGHTINGS.get("composed")(["a", "b"], [1.0, 1.0], transform="si", aggregator={"name": "mgda"})
    method.backward(losses, _ctx(model, z))
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.allclose(got, expected, atol=1e-5)


def test_composed_uw_transform_trains_its_log_variances():
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    method = WEIGHTINGS.get("composed")(["a", "b"], [1.0, 1.0], transform="uw", aggregator={"name": "pcgrad"})
    with torch.no_grad():
        method.transformer.log_vars.copy_(torch.tensor([0.0, 0.5]))
    method.backward(losses, _ctx(model, z))
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    expected = 1 - torch.exp(-torch.tensor([0.0, 0.5])) * losses.detach()
    assert torch.allclose(method.transformer.log_vars.grad, expected, atol=1e-6)


def test_composed_refuses_a_loss_based_aggregator():
    from mtl_cli.config.compose import compose
    from mtl_cli.errors import ConfigError
    from mtl_cli.validation import validate

    with pytest.raises(ConfigError) as err:
        validate(compose(["weighting=composed", "weighting.aggregator.name=uw"]))
    assert "weighting.aggregator.name" in err.value.render() and "gradient-based" in err.value.render()


def test_gradient_conflict_diagnostics_are_logged(tmp_path):
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    overrides = [
        "data.train_size=64",
        "data.val_size=32",
        "data.test_size=32",
        "data.image_size=16",
        "backbone.channels=[8,16,16]",
        "trainer.progress=false",
        "trainer.max_steps=4",
        "trainer.batch_size=16",
        "logger.grad_diagnostics_every=2",
    ]
    train(compose(overrides), tmp_path / "run")
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grads = [r for r in recs if r["split"] == "grad"]
    assert [r["step"] for r in grads] == [2, 4]
    for r in grads:
        cos = {k: v for k, v in r.items() if k.startswith("grad_cos/")}
        assert len(cos) == 6 and all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in cos.values())  # 4 tasks: 6 pairs
        assert r["grad_conflict_share"] == pytest.approx(sum(v < 0 for v in cos.values()) / 6)
        assert r["grad_cos_min"] == pytest.approx(min(cos.values()))
        assert all(r[f"grad_norm/{t}"] > 0 for t in ("shape", "size", "present", "segmentation"))


@pytest.mark.parametrize("name", [n for n in GRADIENT_METHODS if not WEIGHTINGS.get(n).linear])
def test_direction_only_methods_refuse_every_k(name):
    from mtl_cli.config.compose import compose
    from mtl_cli.errors import ConfigError
    from mtl_cli.validation import validate

    with pytest.raises(ConfigError) as err:
        validate(compose([f"weighting={name}", "weighting.every=5"]))
    assert "weighting.every" in err.value.render() and "nothing to reuse" in err.value.render()


def test_batched_mode_equals_the_loop_and_falls_back_to_it_once(monkeypatch, caplog):
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    shared = list(model.shared_parameters())
    loop = jacobian(losses, shared, [0, 1])
    for chunk in (None, 1):
        assert torch.allclose(jacobian(losses, shared, [0, 1], "batched", chunk), loop, atol=1e-6)
    real, batched_calls = torch.autograd.grad, []

    def grad(*args, **kwargs):  # a model whose backward has an operator without a batching rule
        if kwargs.get("is_grads_batched"):
            batched_calls.append(1)
            raise RuntimeError("Batching rule not implemented for aten::made_up")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    method = WEIGHTINGS.get("upgrad")(["a", "b"], [1.0, 1.0], mode="batched")
    with caplog.at_level("WARNING", logger="mtl_cli"):
        for _ in range(3):
            model.zero_grad()
            z, losses = model.losses(x, y)
            w = method.backward(losses, _ctx(model, z))
    assert len(batched_calls) == 1 and method.mode == "loop"  # tried once, then the loop only
    said = [m for m in caplog.messages if "cannot be batched" in m]
    assert len(said) == 1 and "aten::made_up" in said[0]
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.allclose(got, w.to(loop.dtype) @ loop, atol=1e-6)  # the same values as the loop
