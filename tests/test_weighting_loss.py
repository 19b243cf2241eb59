"""Loss-based weighting methods: hand-computed totals and weights, absent tasks, state round
trips, and a short run of the trainer with each method."""

import copy
import json
import math

import pytest
import torch
from torch import nn

from mtl_cli.config.compose import compose
from mtl_cli.registry import WEIGHTINGS
from mtl_cli.train.api import train
from mtl_cli.weighting.base import BackwardContext

# every registered loss-based method (it sees only the losses), read from the registry
METHODS = [n for n in WEIGHTINGS.names() if "grads" not in WEIGHTINGS.get(n).requires]
# keys that let every method leave its warm-up within a few calls
FAST = {"stch": {"warmup_epochs": 1}}


def make(name, n=2, **kw):
    return WEIGHTINGS.get(name)([f"t{i}" for i in range(n)], [1.0] * n, **kw)


def ctx(present=None):
    return BackwardContext(model=nn.Identity(), backward=lambda t: t.backward(), step=0, present=present)


def leaf(values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def close(a, b, tol=1e-5):
    return torch.allclose(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=tol
    )


# ---------------------------------------------------------------- hand-computed values
def test_uw_value():
    w = make("uw")
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    total, wt = w.combine(torch.tensor([1.5, 3.0]))
    assert close(total, 1.5 + 3.0 / 2 + math.log(2.0))
    assert close(wt, [1.0, 0.5])
    total.backward()  # d/ds_t = 1 - exp(-s_t) L_t
    assert close(w.log_vars.grad, [1 - 1.5, 1 - 1.5])


def test_imtl_l_value():
    w = make("imtl_l")
    with torch.no_grad():
        w.scales.copy_(torch.tensor([0.0, math.log(2.0)]))
    total, wt = w.combine(torch.tensor([1.5, 3.0]))
    assert close(total, 1.5 + 2 * 3.0 - math.log(2.0))
    assert close(wt, [1.0, 2.0])


def test_dwa_weights_follow_epoch_averages():
    w = make("dwa", temp=2.0)
    for epoch_losses in ([[2.0, 4.0], [4.0, 4.0]], [[1.0, 3.0], [2.0, 3.0]]):  # epoch means [3, 4], [1.5, 3]
        for losses in epoch_losses:
            assert close(w.backward(leaf(losses), ctx()), [1.0, 1.0])  # warm-up: two epochs of weight 1
        w.on_epoch_end(0)
    r = torch.tensor([1.5 / 3.0, 3.0 / 4.0])
    expected = 2 * torch.softmax(r / 2.0, 0)
    assert close(w.backward(leaf([1.0, 1.0]), ctx()), expected)
    total, _ = w.combine(torch.tensor([2.0, 5.0]))
    assert close(total, expected[0] * 2 + expected[1] * 5)
    w.on_epoch_end(0)  # epoch mean [1, 1]: r = [1 / 1.5, 1 / 3]
    assert close(w.weights(torch.ones(2)), 2 * torch.softmax(torch.tensor([1 / 1.5, 1 / 3.0]) / 2.0, 0))


def test_gls_geometric_mean_and_gradient():
    w = make("gls", n=3)
    losses = leaf([1.0, 4.0, 2.0])
    wt = w.backward(losses, ctx())
    total, _ = w.combine(losses.detach())
    assert close(total, 2.0)  # (1 * 4 * 2)^(1/3)
    expected = 2.0 / (3 * torch.tensor([1.0, 4.0, 2.0]))
    assert close(losses.grad, expected)
    assert close(wt, expected)


def test_si_log_sum():
    w = make("si", n=3)
    losses = leaf([1.0, 4.0, 0.5])
    wt = w.backward(losses, ctx())
    assert close(w.combine(losses.detach())[0], math.log(4.0) + math.log(0.5))
    assert close(losses.grad, [1.0, 0.25, 2.0])
    assert close(wt, [1.0, 0.25, 2.0])
    total, _ = w.combine(torch.tensor([0.0, 1.0, 1.0]))  # log(0) guarded
    assert torch.isfinite(total)


def test_rlw_softmax_of_seeded_normal_and_resume():
    w = make("rlw", n=3, seed=7)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        wt = w.weights(torch.ones(3))
        assert close(wt, torch.softmax(torch.randn(3, generator=g), 0))
        assert close(wt.sum(), 1.0)
    state = copy.deepcopy(w.state_dict())
    cont = [w.weights(torch.ones(3)) for _ in range(4)]
    other = make("rlw", n=3, seed=123)
    other.load_state_dict(state)
    assert all(torch.equal(a, other.weights(torch.ones(3))) for a in cont)
    again = make("rlw", n=3, seed=7)
    assert torch.equal(
        again.weights(torch.ones(3)), torch.softmax(torch.randn(3, generator=torch.Generator().manual_seed(7)), 0)
    )
    assert not torch.equal(make("rlw", n=3, seed=8).weights(torch.ones(3)), make("rlw", n=3).weights(torch.ones(3)))


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_rlw_distributions_on_simplex(distribution):
    w = make("rlw", n=4, distribution=distribution)
    for _ in range(5):
        wt = w.weights(torch.ones(4))
        assert close(wt.sum(), 1.0) and (wt > 0).all()


def test_famo_value_and_logit_update():
    w = make("famo")
    losses = leaf([1.0, 4.0])
    z = w.backward(losses, ctx())
    assert close(z, [0.5, 0.5])
    c = 0.5 / 1.0 + 0.5 / 4.0
    assert close(w.combine(torch.tensor([1.0, 4.0]))[0], 0.5 / c * math.log(4.0))
    assert close(losses.grad, [0.5 / (c * 1.0), 0.5 / (c * 4.0)])  # z_t / (c L_t)
    w.on_step_end(1)  # no previous losses: logits unchanged
    assert torch.equal(w.logits, torch.zeros(2))
    w.backward(leaf([0.5, 3.6]), ctx())  # task 0 fell by log 2, task 1 by log(4/3.6): task 1 gains weight
    w.on_step_end(2)
    # first Adam step: lr * g / |g| = -lr * sign(z * (delta - <z, delta>)) = [-lr, +lr]
    assert close(w.logits, [-0.025, 0.025])
    z = w.weights(torch.ones(2))
    assert close(z, torch.softmax(torch.tensor([-0.025, 0.025]), 0)) and z[1] > 0.5
    assert close(z.sum(), 1.0)


def test_stch_softmax_weights():
    w = make("stch", n=3, warmup_epochs=0, mu=1.0)
    losses = torch.tensor([1.0, math.e, math.e**2])
    total, wt = w.combine(losses)
    assert close(total, math.log(1 + math.e + math.e**2))
    assert close(wt, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0))
    raw = make("stch", n=2, warmup_epochs=0, mu=0.5, log_losses=False)
    total, wt = raw.combine(torch.tensor([1.0, 2.0]))
    assert close(total, 0.5 * math.log(math.exp(2.0) + math.exp(4.0)))
    assert close(wt, torch.softmax(torch.tensor([2.0, 4.0]), 0))


def test_stch_warmup_sets_reference_point():
    w = make("stch", n=2, warmup_epochs=1)
    losses = leaf([2.0, 0.5])
    wt = w.backward(losses, ctx())  # warm-up: sum of log losses
    assert close(wt, [0.5, 2.0]) and close(losses.grad, [0.5, 2.0])
    w.backward(leaf([4.0, 1.5]), ctx())
    w.on_epoch_end(1)  # reference: log of the epoch means [3, 1]
    assert close(w.ideal, [math.log(3.0), 0.0])
    total, wt = w.combine(torch.tensor([3.0, 1.0]))
    assert close(total, math.log(2.0)) and close(wt, [0.5, 0.5])


# ---------------------------------------------------------------- generic properties
def drive(w, present=None, steps=3, epochs=3, seed=0):
    """Feed reproducible losses for a few steps and epochs; return the weights used."""
    g = torch.Generator().manual_seed(seed)
    out = []
    n = len(w.task_names)
    for epoch in range(epochs):
        for step in range(steps):
            vals = torch.rand(n, generator=g) + 0.1
            losses = leaf(vals.tolist())
            if present is not None:  # absent tasks: an exact 0 without a graph
                losses = torch.stack([losses[i] if present[i] > 0 else torch.zeros(()) for i in range(n)])
            out.append(w.backward(losses, ctx(present)))
            w.on_step_end(epoch * steps + step + 1)
        w.on_epoch_end(epoch + 1)
    return out


def task_state(w, i):
    """Every per-task entry of the method's state (buffers/parameters whose last dim is T)."""
    n = len(w.task_names)
    return {
        k: v[..., i].clone()
        for k, v in w.state_dict().items()
        if v.dim() >= 1 and v.shape[-1] == n and k != "task_weights" and v.dtype != torch.uint8
    }


@pytest.mark.parametrize("name", METHODS)
def test_absent_tasks_get_zero_weight_and_keep_state(name):
    w = make(name, n=3, **FAST.get(name, {}))
    before = task_state(w, 1)
    present = torch.tensor([1.0, 0.0, 1.0])
    for wt in drive(w, present):
        assert wt[1] == 0 and torch.isfinite(wt).all()
    after = task_state(w, 1)
    assert all(torch.equal(before[k], after[k]) for k in before), (before, after)
    for p in w.parameters():
        assert p.grad is None or p.grad[1] == 0
    if name in ("rlw", "famo", "stch"):
        assert close(wt.sum(), 1.0)


@pytest.mark.parametrize("name", METHODS)
def test_backward_through_tiny_model_is_finite(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    w = make(name, n=3, **FAST.get(name, {}))
    x, y = torch.randn(8, 4), torch.randn(8, 3)
    for step in range(4):
        model.zero_grad()
        losses = ((model(x) - y) ** 2).mean(0)
        wt = w.backward(losses, BackwardContext(model=model, backward=lambda t: t.backward(), step=step))
        assert torch.isfinite(wt).all() and not wt.requires_grad
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        w.on_step_end(step + 1)
        w.on_epoch_end(step + 1)


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_restores_behaviour(name):
    kw = FAST.get(name, {})
    w = make(name, n=3, **kw)
    drive(w, epochs=2)
    state = copy.deepcopy(w.state_dict())
    expected = drive(w, epochs=2, seed=1)
    fresh = make(name, n=3, **kw)
    fresh.load_state_dict(state)
    got = drive(fresh, epochs=2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


# ---------------------------------------------------------------- the trainer
TRAIN = [
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "backbone.channels=[8,16,16]",
    "trainer.progress=false",
    "trainer.max_epochs=3",
    "trainer.batch_size=16",
    "logger.log_every=1",
]


def _finite(tree):
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return not isinstance(tree, float) or math.isfinite(tree)


@pytest.mark.parametrize("name", METHODS)
def test_trainer_runs_each_method(tmp_path, name):
    extra = [f"weighting.{k}={v}" for k, v in FAST.get(name, {}).items()]
    summary = train(compose([f"weighting={name}"] + TRAIN + extra), run_dir=tmp_path)
    assert summary["test"] and _finite(summary["test"])
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    tasks = sorted(k[len("weight/") :] for k in train_recs[0] if k.startswith("weight/"))
    W = torch.tensor([[r[f"weight/{t}"] for t in tasks] for r in train_recs])
    L = torch.tensor([[r[f"loss/{t}"] for t in tasks] for r in train_recs])
    epoch = torch.tensor([r["epoch"] for r in train_recs])
    assert len(train_recs) == 12 and torch.isfinite(W).all()
    T = len(tasks)
    if name in ("uw", "imtl_l", "rlw", "famo"):
        assert (W[1:] != W[:1]).any()  # learned / random weights change over the steps
    if name in ("rlw", "famo"):
        assert torch.allclose(W.sum(1), torch.ones(len(W)), atol=1e-5)
    if name == "dwa":
        assert (W[epoch <= 2] == 1).all()
        assert torch.allclose(W[epoch == 3].sum(1), torch.full((4,), float(T)), atol=1e-4)
        assert (W[epoch == 3] != 1).any()
    if name == "gls":  # w_t L_t = total / T, the same for every task
        wl = W * L
        assert torch.allclose(wl, wl[:, :1].expand_as(wl), rtol=1e-4)
    if name == "si":
        assert torch.allclose(W * L, torch.ones_like(W), rtol=1e-4)
    if name == "stch":  # warm-up epoch: 1 / L; then softmax weights
        assert torch.allclose((W * L)[epoch == 1], torch.ones(4, T), rtol=1e-4)
        assert torch.allclose(W[epoch > 1].sum(1), torch.ones(8), atol=1e-5)
