"""Nash-MTL, FairGrad, ExcessMTL, MoCo and DB-MTL: known answers, agreement with torchjd's
implementations (test-only dependency) and their state through the engine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtl_cli.registry import WEIGHTINGS
from mtl_cli.weighting.base import BackwardContext
from mtl_cli.weighting.engine import Rows
from mtl_cli.weighting.fairgrad import fairgrad_weights
from mtl_cli.weighting.moco import project_simplex
from mtl_cli.weighting.nash_mtl import alpha_fair_solve, nash_weights

torchjd = pytest.importorskip("torchjd")
from torchjd import aggregation as A  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # cvxpy's DPP notice in torchjd's NashMTL


def random_matrices(n_cases=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for i in range(n_cases):
        t, p = [2, 3, 5, 8][i % 4], 12
        yield torch.randn(t, p, generator=g, dtype=torch.float64)


def make(name, n=2, **kw):
    return WEIGHTINGS.get(name)([f"t{i}" for i in range(n)], [1.0] * n, **kw)


# ---------------------------------------------------------------- Nash-MTL / FairGrad solver
def test_nash_weights_solve_the_bargaining_equation():
    for G in random_matrices():
        M = G @ G.T
        a = nash_weights(M)
        assert (a > 0).all()
        assert torch.allclose(M @ a, 1 / a, rtol=1e-8)  # Newton to round-off
        # hence ||a @ G||^2 = a . M a = n
        assert abs(float((a @ G).norm() ** 2) - G.shape[0]) < 1e-8
    G = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)  # orthogonal: a_t = 1 / ||g_t||
    assert torch.allclose(nash_weights(G @ G.T), torch.tensor([0.5, 2.0], dtype=torch.float64))


def test_nash_mtl_agrees_with_torchjd():
    """torchjd (the authors' cvxpy sequence) solves the same equation on the raw Gramian but stops at a
    residual ||(M/c) a - 1/a|| < 1e-3 or 20 iterations; on these matrices it lands within ~1e-7 of the exact
    root. Tolerance: 1e-4 relative on the weights (no norm clipping on either side)."""
    for G in random_matrices():
        ours = nash_weights(G @ G.T)
        theirs = A.NashMTL(n_tasks=G.shape[0], max_norm=0.0).weighting(G.float()).double()
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=0)


def test_nash_mtl_method_clips_the_norm_and_warm_starts():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(3, 10, generator=g)
    m = make("nash_mtl", 3)
    w, d = m.aggregate(G)
    assert abs(float(d.norm()) - 1.0) < 1e-5  # ||d|| = sqrt(3) > max_norm = 1: clipped
    assert torch.allclose(d, w @ G)
    assert torch.allclose(m.prev_alpha.double(), nash_weights((G @ G.T).double()), rtol=1e-5)
    w2, _ = make("nash_mtl", 3, max_norm=0.0).aggregate(G)
    assert torch.allclose(w2, m.prev_alpha, rtol=1e-5)  # unclipped: the root itself
    # warm start from the root: no Newton step needed; also from a poor start: same root
    M = (G @ G.T).double()
    root = nash_weights(M)
    assert torch.allclose(nash_weights(M, root * 1e3, max_iter=50), root, rtol=1e-8)
    assert torch.allclose(nash_weights(M, root, max_iter=1), root, rtol=1e-8)


def test_solver_survives_dependent_and_zero_gradients():
    """Linearly dependent gradients without a non-negative null vector (v, v, 2v) have a positive
    solution; a zero gradient has none (``0 = 1/a``): it gets weight 0 and the others are solved
    without it; an all-zero block gives zero weights (issue 13: no arbitrary finite weights)."""
    g = torch.Generator().manual_seed(4)
    v = torch.randn(1, 6, generator=g, dtype=torch.float64)
    for alpha in (0.5, 1.0, 2.0):
        G = torch.cat([v, v, 2 * v])
        M = G @ G.T
        w = alpha_fair_solve(M, alpha)
        assert (w > 0).all() and torch.allclose(M @ w, w ** (-1 / alpha), rtol=1e-9)
        G = torch.cat([v, torch.zeros_like(v)])
        w = alpha_fair_solve(G @ G.T, alpha)
        assert w[1] == 0 and torch.allclose(w[:1], alpha_fair_solve(v @ v.T, alpha), rtol=1e-12)
        assert torch.equal(
            alpha_fair_solve(torch.zeros(3, 3, dtype=torch.float64), alpha), torch.zeros(3, dtype=torch.float64)
        )
    for G in (torch.cat([v, v, 2 * v]), torch.cat([v, torch.zeros_like(v)]), torch.zeros(3, 6, dtype=torch.float64)):
        assert torch.isfinite(make("nash_mtl", G.shape[0]).aggregate(G)[1]).all()
        assert torch.isfinite(make("fairgrad", G.shape[0]).aggregate(G)[1]).all()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_solves_its_equation_and_agrees_with_torchjd(alpha):
    """Same equation, both solved to high accuracy (scipy least squares vs Newton): relative 1e-6 on the
    update (measured ~1e-9)."""
    ref = A.FairGrad(alpha)
    for G in random_matrices():
        M = G @ G.T
        w = fairgrad_weights(M, alpha)
        assert torch.allclose(M @ w, w ** (-1 / alpha), rtol=1e-7)
        theirs = ref(G).double()
        assert float((w @ G - theirs).norm() / theirs.norm()) < 1e-6


def test_fairgrad_special_cases():
    G = next(random_matrices())
    M = G @ G.T
    assert torch.allclose(fairgrad_weights(M, 1.0), nash_weights(M), rtol=1e-8)  # alpha = 1: Nash-MTL
    # alpha = 0: linear scalarisation with torchjd's uniform weights 1/n (issue 13; was 1)
    assert torch.equal(fairgrad_weights(M, 0.0), torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.allclose(fairgrad_weights(M, 0.0), A.FairGrad(0.0).gramian_weighting(M))
    # scale: G -> s G gives w -> s^(-2 alpha / (alpha + 1)) w
    assert torch.allclose(fairgrad_weights(9 * M, 2.0), fairgrad_weights(M, 2.0) * 9 ** (-2 / 3), rtol=1e-8)
    w, d = make("fairgrad", 2).aggregate(G.float())
    assert torch.allclose(w.double(), fairgrad_weights(M, 2.0), rtol=1e-5)  # default alpha 2.0


# ---------------------------------------------------------------- ExcessMTL
@pytest.mark.parametrize("warmup", [1, 2])
def test_excess_mtl_agrees_with_torchjd_over_a_sequence(warmup):
    """Same state evolution as torchjd.ExcessMTL(n_warmup_steps=warmup) (our warmup_steps=1 is the
    authors' code: torchjd's n_warmup_steps=1); our weights sum to n where torchjd's sum to 1. Tolerance:
    1e-5 relative (our state is float32; torchjd divides by baseline + 1e-7, we by the baseline)."""
    g = torch.Generator().manual_seed(5)
    n, P = 4, 30
    ours = make("excess_mtl", n, robust_step_size=0.5, warmup_steps=warmup)
    ref = A.ExcessMTL(robust_step_size=0.5, n_warmup_steps=warmup)
    seen = []
    for _ in range(6):
        G = torch.randn(n, P, generator=g, dtype=torch.float64) * torch.tensor([[1.0], [0.5], [2.0], [0.1]])
        w, d = ours.aggregate(G)
        theirs = ref.weighting(G)
        assert torch.allclose(w, n * theirs, rtol=1e-5, atol=1e-7)
        assert torch.allclose(d, w @ G)
        seen.append(w)
    assert torch.equal(seen[0], torch.ones(n, dtype=torch.float64))  # first call: baseline only
    assert not torch.allclose(seen[-1], seen[0])


def test_excess_mtl_hand_computed_two_steps():
    m = make("excess_mtl", 2, robust_step_size=1.0)
    G1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    m.aggregate(G1)
    # E = sum g^2 / sqrt(S + 1e-7) with S = g^2: |g|_1 = [7, 1]
    assert torch.allclose(m.baseline[0], torch.tensor([7.0, 1.0]), rtol=1e-6)
    G2 = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    w, _ = m.aggregate(G2)
    e1 = (9 / math.sqrt(18) + 16 / math.sqrt(32)) / 7  # task 0: S = 2 g^2; task 1: zero gradient
    expected = 2 * torch.softmax(torch.tensor([e1, 0.0]), 0)
    assert torch.allclose(w, expected, rtol=1e-5)


# ---------------------------------------------------------------- MoCo
def test_project_simplex():
    assert torch.allclose(project_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))
    assert torch.allclose(project_simplex(torch.tensor([0.3, 0.3, -1.0])), torch.tensor([0.5, 0.5, 0.0]))
    assert torch.allclose(project_simplex(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0.2, 0.3, 0.5]))


def test_moco_hand_computed_two_steps():
    m = make("moco", 2, beta=0.5, beta_sigma=0.0, gamma=0.1, gamma_sigma=0.0, rho=0.0)
    # step 1: Y = 0.5 G1 = [[.5, 0], [0, 1]]; Y Y^T lam = [.125, .5]; lam - .1 * that = [.4875, .45];
    # projection adds (1 - .9375) / 2 = .03125: lam = [.51875, .48125]; d = Y^T lam = [.259375, .48125]
    w, d = m.aggregate(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert w is None
    assert torch.allclose(m.lambd[0], torch.tensor([0.51875, 0.48125]))
    assert torch.allclose(d, torch.tensor([0.259375, 0.48125]))
    # step 2: Y = .5 Y + .5 G2 = [[.75, .5], [0, -.5]]; Y Y^T = [[.8125, -.25], [-.25, .25]];
    # Y Y^T lam = [.301171875, -.009375]; lam - .1 * that = [.4886328125, .4821875], + .01458984375 each
    w, d = m.aggregate(torch.tensor([[1.0, 1.0], [0.0, -2.0]]))
    lam = torch.tensor([0.50322265625, 0.49677734375])
    assert torch.allclose(m.lambd[0], lam)
    assert torch.allclose(d, torch.tensor([0.75 * lam[0], 0.5 * lam[0] - 0.5 * lam[1]]), atol=1e-6)
    assert torch.allclose(m.y, torch.tensor([[0.75, 0.5], [0.0, -0.5]]))


def test_moco_step_sizes_decay_with_the_step_count():
    m = make("moco", 2, beta=0.5, beta_sigma=1.0, gamma=0.1, gamma_sigma=0.0)
    G = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    m.aggregate(G)
    m.aggregate(torch.zeros(2, 2))  # beta_2 = 0.25: Y = 0.75 * 0.5 G
    assert torch.allclose(m.y, 0.375 * G)


# ---------------------------------------------------------------- DB-MTL
def test_db_mtl_hand_computed_two_steps():
    m = make("db_mtl", 2, beta=0.9)
    G = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # log-loss gradients [[1, 0], [0, 2]]; h = 0.1 of them; norms [.1, .2]: d = 2 h_0 + h_1
    w, d = m.aggregate(G, Rows.every(G, torch.tensor([2.0, 0.5])))
    assert w is None
    assert torch.allclose(d, torch.tensor([0.2, 0.2]), atol=1e-6)
    G = torch.tensor([[0.0, 4.0], [1.0, 0.0]])
    # log-loss gradients [[0, 1], [1, 0]]; h = [[.09, .1], [.1, .18]]
    w, d = m.aggregate(G, Rows.every(G, torch.tensor([4.0, 1.0])))
    n0, n1 = math.sqrt(0.09**2 + 0.1**2), math.sqrt(0.1**2 + 0.18**2)
    expected = torch.tensor([n1 / n0 * 0.09 + 0.1, n1 / n0 * 0.1 + 0.18])
    assert torch.allclose(d, expected, atol=1e-6)
    assert torch.allclose(m.h, torch.tensor([[0.09, 0.1], [0.1, 0.18]]), atol=1e-7)


def test_db_mtl_is_invariant_to_loss_scale_and_balances_norms():
    g = torch.Generator().manual_seed(6)
    G = torch.randn(3, 8, generator=g)
    L = torch.tensor([1.0, 2.0, 3.0])
    a, b = make("db_mtl", 3), make("db_mtl", 3)
    da = a.aggregate(G, Rows.every(G, L))[1]
    db = b.aggregate(10 * G, Rows.every(G, 10 * L))[1]
    assert torch.allclose(da, db, rtol=1e-5)


# ---------------------------------------------------------------- through the engine
class Net(nn.Module):
    shared_representation = True

    def __init__(self, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4))
        self.task_names = [f"t{i}" for i in range(n)]
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in self.task_names})

    def shared_parameters(self):
        return self.enc.parameters()

    def task_parameters(self, t):
        return self.heads[t].parameters()

    def losses(self, x, y):
        z = self.enc(x)
        return z, torch.stack(
            [((self.heads[t](z).squeeze(1) - y[:, i]) ** 2).mean() for i, t in enumerate(self.task_names)]
        )


def _step(model, method, step, present=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    model.zero_grad()
    z, losses = model.losses(x, y)
    if present is not None:
        losses = losses * present
    ctx = BackwardContext(
        model=model,
        backward=lambda total, inputs=None: total.backward(inputs=inputs),
        step=step,
        present=present,
        rep=z,
        grad_scale=1.0,
    )
    return method.backward(losses, ctx)


STATEFUL = ["nash_mtl", "excess_mtl", "moco", "db_mtl"]


@pytest.mark.parametrize("name", STATEFUL)
def test_absent_tasks_keep_their_state(name):
    model = Net()
    m = make(name, 3)
    _step(model, m, 0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _step(model, m, 1, present=torch.tensor([1.0, 0.0, 1.0]), seed=1)
    after = m.state_dict()
    for k, v in after.items():
        if v.dim() >= 1 and v.shape[-1] == 3 and k not in ("task_weights", "last_weights"):  # [.., T]: column 1
            assert torch.equal(v[..., 1], before[k][..., 1]), k
        if v.dim() == 2 and v.shape[0] == 3 and v.shape[1] > 3:  # [T, P]: row 1
            assert torch.equal(v[1], before[k][1]), k
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.enc.parameters())


@pytest.mark.parametrize("name", STATEFUL)
def test_state_survives_a_checkpoint_and_layer_grouping_keeps_one_state_per_block(name):
    model = Net()
    m = make(name, 3, grouping="layer")
    for s in range(2):
        _step(model, m, s, seed=s)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    fresh = make(name, 3, grouping="layer")
    fresh.load_state_dict(sd)
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v)
    _step(model, m, 2, seed=7)
    g1 = torch.cat([p.grad.reshape(-1) for p in model.enc.parameters()])
    _step(model, fresh, 2, seed=7)
    g2 = torch.cat([p.grad.reshape(-1) for p in model.enc.parameters()])
    assert torch.allclose(g1, g2)
    n_blocks = len(list(model.enc.parameters()))
    P = sum(p.numel() for p in model.enc.parameters())
    for k, v in m.state_dict().items():
        if k in ("lambd", "task_w", "baseline"):
            assert v.shape == (n_blocks, 3)
        if k in ("y", "sq_sum", "h"):
            assert v.shape == (3, P)


def test_direction_only_methods_refuse_every():
    for name in ("moco", "db_mtl"):
        cls = WEIGHTINGS.get(name)
        problems = cls.check({"every": 2}, Net, ["a", "b"])
        assert problems and problems[0].key == "weighting.every"
        assert not cls.check({"every": 1}, Net, ["a", "b"])
