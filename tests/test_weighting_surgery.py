"""GradVac, GradDrop, ConFIG (conflict_free), IMTL and GradNorm: known answers, agreement with
torchjd's aggregators (a test-only dependency) and the state they keep across steps and checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mtl_cli.config.checks import component_problems
from mtl_cli.registry import WEIGHTINGS
from mtl_cli.weighting.base import BackwardContext
from mtl_cli.weighting.conflict_free import config_weights
from mtl_cli.weighting.engine import jacobian
from mtl_cli.weighting.graddrop import graddrop_direction
from mtl_cli.weighting.gradnorm import gradnorm_grad
from mtl_cli.weighting.gradvac import gradvac_weights
from mtl_cli.weighting.imtl_g import imtl_g_weights

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as A  # noqa: E402

D = torch.float64


def random_matrices(n_cases=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for i in range(n_cases):
        t, p = [2, 3, 5, 8][i % 4], 12
        yield torch.randn(t, p, generator=g, dtype=D)


class TwoHeads(nn.Module):
    shared_representation = True

    def __init__(self, same=False):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
        if same:  # two identical tasks
            self.heads["b"].load_state_dict(self.heads["a"].state_dict())
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


def _ctx(model, z, step=0, present=None):
    return BackwardContext(
        model=model,
        backward=lambda total, inputs=None: total.backward(inputs=inputs),
        step=step,
        present=present,
        rep=z,
        grad_scale=1.0,
    )


def _data(same=False):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, generator=g), torch.randn(16, 2, generator=g)
    if same:
        y[:, 1] = y[:, 0]
    return x, y


def _torchjd_orders(n, seed):
    """The orders torchjd's GradVac draws after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    orders = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        orders.append([others[k] for k in torch.randperm(n - 1).tolist()])
    return orders


# ---------------------------------------------------------------- GradVac
def test_gradvac_raises_the_cosine_to_the_target():
    G = torch.eye(2, dtype=D)  # orthogonal: cos 0 < target 0.5
    phi = torch.full((2, 2), 0.5, dtype=D)
    w, new = gradvac_weights(G @ G.T, phi, [[1], [0]], beta=0.01)
    # g_1' = g_1 + a g_2 with a / sqrt(1 + a^2) = 0.5: a = 1 / sqrt(3) (and symmetrically)
    a = 1 / math.sqrt(3)
    assert torch.allclose(w, torch.tensor([1 + a, 1 + a], dtype=D), atol=1e-7)
    assert torch.allclose(new[0, 1], torch.tensor(0.99 * 0.5, dtype=D))  # EMA of the pre-correction cosine 0
    # a cosine above the target: no correction, only the EMA moves
    G = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D)
    w, new = gradvac_weights(G @ G.T, torch.zeros(2, 2, dtype=D), [[1], [0]], beta=0.5)
    assert torch.equal(w, torch.ones(2, dtype=D))
    assert torch.allclose(new[0, 1], torch.tensor(0.5 / math.sqrt(2), dtype=D))


@pytest.mark.parametrize("beta", [0.01, 0.5])
def test_gradvac_agrees_with_torchjd_over_several_steps(beta):
    """Same orders (drawn from the global RNG as torchjd does), same EMA state over 3 steps: float64
    agreement up to round-off (1e-9 relative: only the summation order of the norm updates differs)."""
    for G in random_matrices():
        n = G.shape[0]
        ref = A.GradVac(beta=beta)
        phi = torch.zeros(n, n, dtype=D)
        for step in range(3):
            Gs = G + 0.3 * step * G.flip(0)
            orders = _torchjd_orders(n, 100 + step)
            w, phi = gradvac_weights(Gs @ Gs.T, phi, orders, beta)
            torch.manual_seed(100 + step)
            theirs = ref(Gs)
            assert torch.allclose(w @ Gs, theirs, rtol=1e-9, atol=1e-9)


def test_gradvac_keeps_its_targets_and_order_across_a_checkpoint():
    G = next(random_matrices(1, seed=3))[:2].repeat(2, 1) * torch.tensor([[1.0], [1.0], [-1.0], [0.5]], dtype=D)
    G = G + 0.1 * torch.randn(4, 12, generator=torch.Generator().manual_seed(5), dtype=D)
    m = WEIGHTINGS.get("gradvac")(list("abcd"), [1.0] * 4, beta=0.3, seed=7)
    m.aggregate(G)
    assert m.phi.abs().sum() > 0
    m2 = WEIGHTINGS.get("gradvac")(list("abcd"), [1.0] * 4, beta=0.3, seed=0)
    m2.load_state_dict(m.state_dict())
    w1, _ = m.aggregate(G)
    w2, _ = m2.aggregate(G)
    assert torch.equal(w1, w2) and torch.equal(m.phi, m2.phi)
    # grouping=layer: one block of targets per parameter tensor, restored with its shape
    model = TwoHeads()
    x, y = _data()
    z, losses = model.losses(x, y)
    lay = WEIGHTINGS.get("gradvac")(["a", "b"], [1.0, 1.0], grouping="layer")
    lay.backward(losses, _ctx(model, z))
    assert lay.phi.shape == (2, 2, 2)
    fresh = WEIGHTINGS.get("gradvac")(["a", "b"], [1.0, 1.0], grouping="layer")
    fresh.load_state_dict(lay.state_dict())
    assert torch.equal(fresh.phi, lay.phi)


def test_gradvac_absent_task_keeps_its_targets():
    model = TwoHeads()
    x, y = _data()
    m = WEIGHTINGS.get("gradvac")(["a", "b"], [1.0, 1.0])
    z, losses = model.losses(x, y)
    losses = torch.stack([losses[0], torch.zeros(())])
    w = m.backward(losses, _ctx(model, z, present=torch.tensor([1.0, 0.0])))
    assert w.tolist() == [1.0, 0.0] and m.phi.abs().sum() == 0


# ---------------------------------------------------------------- GradDrop
def test_graddrop_hand_computed_mask():
    G = torch.tensor([[1.0, -2.0, 3.0, 0.0], [-3.0, 2.0, 1.0, 0.0]], dtype=D)
    # P = 0.5 (1 + sum / sum|.|): [0.25, 0.5, 1.0, (0/0 ->) 0.5]
    U = torch.tensor([0.1, 0.9, 0.5, 0.3], dtype=D)
    # coord 0: P > U: keep positives (1); coord 1: P < U: keep negatives (-2); coord 2: all positive (4)
    assert torch.equal(graddrop_direction(G, U), torch.tensor([1.0, -2.0, 4.0, 0.0], dtype=D))
    # leak 1 for task 0: its components always pass
    assert torch.equal(graddrop_direction(G, U, torch.tensor([1.0, 0.0])), torch.tensor([1.0, -2.0, 4.0, 0.0], dtype=D))
    # leak 0.5 for task 1: half of its dropped components pass
    out = graddrop_direction(G, U, torch.tensor([0.0, 0.5]))
    assert torch.equal(out, torch.tensor([1.0 - 1.5, -2.0 + 1.0, 4.0, 0.0], dtype=D))


def test_graddrop_agrees_with_torchjd():
    """One sign per coordinate: the draw does not matter, the direction is the plain sum (exact);
    random matrices with the same draw (torchjd draws from the global RNG): exact too."""
    ref = A.GradDrop()
    for G in random_matrices():
        same = G.abs() * torch.where(torch.arange(12) % 2 == 0, 1.0, -1.0).to(D)
        assert torch.allclose(ref(same), same.sum(0), atol=1e-12)
        assert torch.allclose(graddrop_direction(same, torch.rand(12, dtype=D)), same.sum(0), atol=1e-12)
        torch.manual_seed(11)
        U = torch.rand(12, dtype=D)
        torch.manual_seed(11)
        assert torch.allclose(graddrop_direction(G, U), ref(G), atol=1e-12)
        leak = torch.rand(G.shape[0], dtype=D)
        torch.manual_seed(12)
        U = torch.rand(12, dtype=D)
        torch.manual_seed(12)
        assert torch.allclose(graddrop_direction(G, U, leak), A.GradDrop(leak=leak)(G), atol=1e-12)


def test_graddrop_draws_are_seeded_and_survive_a_checkpoint():
    G = next(random_matrices(1))
    a = WEIGHTINGS.get("graddrop")(["a", "b"], [1.0, 1.0], seed=3)
    b = WEIGHTINGS.get("graddrop")(["a", "b"], [1.0, 1.0], seed=3)
    assert torch.equal(a.aggregate(G)[1], b.aggregate(G)[1])
    assert a.aggregate(G)[0] is None and b.aggregate(G)[0] is None
    c = WEIGHTINGS.get("graddrop")(["a", "b"], [1.0, 1.0], seed=0)
    c.load_state_dict(a.state_dict())
    assert torch.equal(a.aggregate(G)[1], c.aggregate(G)[1])
    assert not torch.equal(a.aggregate(G)[1], a.aggregate(G)[1])  # a fresh draw each step
    [problem] = WEIGHTINGS.get("graddrop").check({"name": "graddrop", "leak": [0.5]}, TwoHeads, ["a", "b"])
    assert problem.key == "weighting.leak" and "one leak per enabled task (2: a, b)" in problem.render()


# ---------------------------------------------------------------- ConFIG
def test_config_agrees_with_torchjd():
    """float64 on both sides, full-rank U: round-off agreement (1e-8 relative: ours goes through the
    Gramian, whose conditioning is the square of U's)."""
    for G in random_matrices():
        w = config_weights(G @ G.T)
        assert torch.allclose(w @ G, A.ConFIG()(G), rtol=1e-8, atol=1e-10)
        pref = torch.rand(G.shape[0], generator=torch.Generator().manual_seed(2), dtype=D) + 0.5
        assert torch.allclose(config_weights(G @ G.T, pref) @ G, A.ConFIG(pref_vector=pref)(G), rtol=1e-8, atol=1e-10)


def test_config_equal_cosines_zero_rows_and_duplicates():
    for G in random_matrices():
        d = config_weights(G @ G.T) @ G
        cos = (G / G.norm(dim=1, keepdim=True)) @ d / d.norm()
        assert torch.allclose(cos, cos[0].expand_as(cos), atol=1e-9) and cos[0] > 0
        assert torch.allclose(d.norm(), (G @ (d / d.norm())).sum())  # length = sum of projections
    G = next(random_matrices(1, seed=4))[:2]
    Z = torch.cat([G, torch.zeros(1, 12, dtype=D)])  # a zero gradient: weight 0 (torchjd: zero unit row)
    w = config_weights(Z @ Z.T)
    assert w[2] == 0 and torch.allclose(w @ Z, A.ConFIG()(Z), rtol=1e-8, atol=1e-10)
    R = torch.cat([G, 2 * G[:1]])  # rank-deficient U (a repeated direction)
    assert torch.allclose(config_weights(R @ R.T) @ R, A.ConFIG()(R), rtol=1e-6, atol=1e-8)
    assert torch.equal(config_weights(torch.zeros(2, 2)), torch.zeros(2))


# ---------------------------------------------------------------- IMTL
def test_imtl_is_imtl_g_on_the_scaled_losses():
    model = TwoHeads()
    x, y = _data()
    m = WEIGHTINGS.get("imtl")(["a", "b"], [1.0, 1.0])
    with torch.no_grad():
        m.transformer.scales.copy_(torch.tensor([0.5, -1.0]))
    e = torch.exp(m.transformer.scales.detach())
    z, losses = model.losses(x, y)
    G = jacobian(losses, list(model.shared_parameters()), [0, 1])
    Gs = e[:, None] * G
    alpha = imtl_g_weights(Gs @ Gs.T).float()
    w = m.backward(losses, _ctx(model, z))
    assert torch.allclose(w, alpha * e, atol=1e-6)
    got = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
    assert torch.allclose(got, alpha @ Gs, atol=1e-6)
    _, losses2 = model.losses(x, y)
    for i, t in enumerate("ab"):  # each head: the gradient of its scaled loss
        ref = torch.autograd.grad(e[i] * losses2[i], list(model.heads[t].parameters()), retain_graph=True)
        for p, r in zip(model.heads[t].parameters(), ref):
            assert torch.allclose(p.grad, r, atol=1e-6)
    s = m.transformer.scales.detach().clone().requires_grad_(True)
    ref = torch.autograd.grad((torch.exp(s) * losses2.detach() - s).sum(), s)[0]
    assert torch.allclose(m.transformer.scales.grad, ref, atol=1e-6)


def test_imtl_absent_task_gets_no_scale_gradient():
    model = TwoHeads()
    x, y = _data()
    m = WEIGHTINGS.get("imtl")(["a", "b"], [1.0, 1.0])
    z, losses = model.losses(x, y)
    losses = torch.stack([losses[0], torch.zeros(())])
    w = m.backward(losses, _ctx(model, z, present=torch.tensor([1.0, 0.0])))
    assert w.tolist() == [1.0, 0.0] and m.transformer.scales.grad[1] == 0 and m.transformer.scales.grad[0] != 0


# ---------------------------------------------------------------- GradNorm
def test_gradnorm_hand_example_moves_weight_to_the_smaller_gradient():
    w, norms, ratios = torch.ones(2), torch.tensor([1.0, 3.0]), torch.ones(2)
    # G = [1, 3], mean 2, equal rates: target 2 each; dL/dw = sign(G - 2) * norms = [-1, 3]
    assert torch.equal(gradnorm_grad(w, norms, ratios, 1.5), torch.tensor([-1.0, 3.0]))
    m = WEIGHTINGS.get("gradnorm")(["a", "b"], [1.0, 1.0], optimizer="sgd", lr=0.1)
    m.pending.copy_(torch.tensor([-1.0, 3.0]))
    m.pending_count.fill_(1)
    m.on_step_end(1)  # [1.1, 0.7] renormalised to sum 2
    assert torch.allclose(m.loss_weights, torch.tensor([1.1, 0.7]) * 2 / 1.8)
    m = WEIGHTINGS.get("gradnorm")(["a", "b"], [1.0, 1.0])  # Adam: the first step moves each by lr
    m.pending.copy_(torch.tensor([-1.0, 3.0]))
    m.pending_count.fill_(1)
    m.on_step_end(1)
    assert torch.allclose(m.loss_weights, torch.tensor([1.025, 0.975]))
    # a slower task (larger loss ratio) gets a larger target
    g = gradnorm_grad(torch.ones(2), torch.ones(2), torch.tensor([1.0, 0.5]), 1.5)
    assert torch.equal(g, torch.tensor([-1.0, 1.0]))


def test_gradnorm_equal_tasks_keep_equal_weights_and_weights_sum_to_t():
    model = TwoHeads(same=True)
    x, y = _data(same=True)
    m = WEIGHTINGS.get("gradnorm")(["a", "b"], [1.0, 1.0])
    for step in range(3):
        model.zero_grad()
        z, losses = model.losses(x + step, y)
        w = m.backward(losses, _ctx(model, z, step=step))
        m.on_step_end(step + 1)
        assert torch.allclose(m.loss_weights, torch.ones(2)) and torch.allclose(w, torch.ones(2))
    # different tasks: the weights move, stay positive and sum to T
    model, (x, y) = TwoHeads(), _data()
    m = WEIGHTINGS.get("gradnorm")(["a", "b"], [1.0, 1.0], lr=0.2)
    for step in range(4):
        model.zero_grad()
        z, losses = model.losses(x * (1 + step), y)
        w = m.backward(losses, _ctx(model, z, step=step))
        if step == 0:  # the model's update uses sum_t w_t L_t with the current weights
            ref = torch.autograd.grad((w * model.losses(x, y)[1]).sum(), model.enc.weight)[0]
            assert torch.allclose(model.enc.weight.grad, ref, atol=1e-6)
        m.on_step_end(step + 1)
    assert not torch.allclose(m.loss_weights, torch.ones(2))
    assert (m.loss_weights > 0).all() and torch.allclose(m.loss_weights.sum(), torch.tensor(2.0))
    assert torch.isfinite(m.initial_losses).all()


def test_gradnorm_rep_layer_is_refused_without_one_representation():
    cls = WEIGHTINGS.get("gradnorm")

    class PerTask:  # an architecture without one shared representation
        shared_representation = False

    problems = cls.check({"name": "gradnorm", "layer": "rep"}, PerTask, ["a", "b"])
    assert len(problems) == 1 and problems[0].key == "weighting.layer" and "layer=last" in problems[0].render()
    assert cls.check({"name": "gradnorm", "layer": "rep"}, TwoHeads, ["a", "b"]) == []
    assert cls.check({"name": "gradnorm"}, PerTask, ["a", "b"]) == []
    [problem] = component_problems("weighting", {"name": "gradnorm", "layer": "first"}, WEIGHTINGS)
    assert problem.key == "weighting.layer" and "'last', 'all' or 'rep'" in problem.render()


def test_gradnorm_trains_the_default_experiment(tmp_path):
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    overrides = [
        "weighting=gradnorm",
        "data.train_size=320",
        "data.val_size=16",
        "data.test_size=16",
        "data.image_size=16",
        "backbone.channels=[8,16,16]",
        "trainer.progress=false",
        "trainer.max_epochs=1",
        "trainer.batch_size=32",
        "logger.log_every=5",
        "scheduler=constant",
    ]
    summary = train(compose(overrides), tmp_path / "run")
    assert summary["steps"] == 10
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    mean = lambda r: sum(r[f"loss/{t}"] for t in ("shape", "size", "present", "segmentation")) / 4  # noqa: E731
    assert mean(train_recs[-1]) < mean(train_recs[0])
    assert all(math.isfinite(v) for v in summary["test"]["shape"].values())
