"""Every gradient method on hard inputs (issue 13): zero blocks, zero and negligible rows,
identical and conflicting gradients, rank-deficient Jacobians (more tasks than directions) and
gradient norms that differ by up to 1e6, in float32 and float64, for T = 1 to 64 tasks.

Properties, parametrized over the registry (a new method is tested without editing a list, and
``CLAIMS`` must say what it claims: a test checks that the table covers the registry):

- finite output on every input, and an all-zero block gives a zero direction;
- the non-conflicting property ``g_t . d >= 0`` for the methods that claim it;
- invariance to the order of the tasks (same direction for permuted rows);
- the method's own optimality condition, checked in float64 on the exact Gramian of the same
  gradients (not against torchjd, which is itself loose for MGDA, CAGrad and Nash-MTL): the
  min-norm KKT conditions (MGDA), the duality gap of CAGrad's problem with its ball constraint,
  ``a_t (M a)_t = 1`` (Nash-MTL) and ``M w = w^(-1/alpha)`` (FairGrad) or a certificate that 0 is
  in the convex hull (ill-posed: zero update), equal projections on the unit gradients (IMTL-G),
  equal cosines (ConFIG), the dual-cone QPs' KKT conditions (UPGrad, DualProj).

Tolerances are relative to the round-off of the input's dtype: a product ``g_i . d`` computed from
float32 gradients is only known to about ``eps32 ||g_i|| sum_j |w_j| ||g_j||``, whatever the solver
(``_roundoff``); each check states its factor. Then the numbered cases of the issue, as regression
tests with their figures. The default run covers T <= 17 and norm ratios 1e3 and 1e6 (about 30 s on
two cores); ``-m slow`` sweeps T up to 64, ratios 1 to 1e6 and more seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl_cli.registry import WEIGHTINGS
from mtl_cli.weighting._qp import dual_cone_weights, min_norm_point
from mtl_cli.weighting.engine import GradientWeighting, Rows

NAMES = WEIGHTINGS.names()
GRADIENT = [n for n in NAMES if issubclass(WEIGHTINGS.get(n), GradientWeighting)]

# What each registered method claims on any input, beyond finite output and a zero direction for an
# all-zero block (which every method must give). Keys: registry names; values: a list of
# (constructor keys, claims). "order": the same direction for permuted tasks; "non_conflicting":
# g_t . d >= 0 for every task; "optimality": the method's own optimality condition (OPTIMALITY).
# Loss-based methods see no gradients: "loss" (finite weights on hard losses).
ORDER, NONCONF, OPT, LOSS = "order", "non_conflicting", "optimality", "loss"
CLAIMS: dict[str, list[tuple[dict, set[str]]]] = {
    "aligned_mtl": [({}, {ORDER})],
    "cagrad": [({"rescale": 0}, {ORDER, OPT}), ({"c": 2.0, "rescale": 0}, {ORDER, NONCONF, OPT})],
    "composed": [({}, {LOSS})],  # a loss transform in front of a gradient method (tested as those)
    "conflict_free": [({}, {ORDER, OPT})],
    "db_mtl": [({}, {ORDER})],
    "dualproj": [({}, {ORDER, NONCONF, OPT})],
    "dwa": [({}, {LOSS})],
    "ew": [({}, {LOSS})],
    "excess_mtl": [({}, {ORDER})],
    "famo": [({}, {LOSS})],
    "fairgrad": [({}, {ORDER, NONCONF, OPT}), ({"alpha": 0.5}, {ORDER, NONCONF, OPT}), ({"alpha": 0.0}, {ORDER})],
    "gls": [({}, {LOSS})],
    "graddrop": [({}, {ORDER})],  # the draws are per coordinate: the same for any task order
    "gradnorm": [({}, {LOSS})],  # weights from gradient norms of one layer, not an aggregation of G
    "gradvac": [({}, set())],  # a random order of the other tasks per task
    "imtl": [({}, {ORDER, OPT})],
    "imtl_g": [({}, {ORDER, OPT})],
    "imtl_l": [({}, {LOSS})],
    "mgda": [({}, {ORDER, NONCONF, OPT}), ({"normalization": "l2"}, {ORDER, NONCONF, OPT})],
    "mgda_ub": [({}, {ORDER, NONCONF, OPT})],
    "moco": [({}, {ORDER})],
    "nash_mtl": [({}, {ORDER, NONCONF, OPT}), ({"max_norm": 0.0}, {ORDER, NONCONF, OPT})],
    "pcgrad": [({}, set())],  # a random order of the other tasks per task
    "rlw": [({}, {LOSS})],
    "si": [({}, {LOSS})],
    "static": [({}, {LOSS})],
    "stch": [({}, {LOSS})],
    "upgrad": [({}, {ORDER, NONCONF, OPT})],
    "uw": [({}, {LOSS})],
}

FAMILIES = [
    "random",
    "conflicting",
    "identical",
    "zero_block",
    "zero_row",
    "negligible_row",
    "rank_deficient",
    "narrow",
    "scale_1e3",
    "scale_1e6",
]
FAST = {"tasks": [1, 2, 3, 5, 8, 17], "seeds": [0], "ratios": {"scale_1e3": 1e3, "scale_1e6": 1e6}}
SLOW = {
    "tasks": [2, 4, 8, 16, 40, 64],
    "seeds": [1, 2, 3],
    "ratios": {f"scale_1e{k}": 10.0**k for k in range(0, 7)},
}
DTYPES = [torch.float32, torch.float64]
P = 24  # columns: T > P for the larger T (more tasks than directions)


def gradients(family: str, T: int, dtype: torch.dtype, seed: int, ratio: float = 1.0) -> torch.Tensor | None:
    """A [T, P] gradient matrix of ``family`` (computed in float64, then cast), or None when the
    family needs more tasks."""
    g = torch.Generator().manual_seed(1000 * seed + T)
    D = torch.float64
    if family == "random":
        G = torch.randn(T, P, generator=g, dtype=D)
    elif family == "conflicting":  # pairs of nearly opposite gradients
        u = torch.randn(P, generator=g, dtype=D)
        signs = torch.tensor([1.0 if t % 2 == 0 else -1.0 for t in range(T)], dtype=D)
        G = signs[:, None] * (u[None, :] + 0.3 * torch.randn(T, P, generator=g, dtype=D))
    elif family == "identical":
        G = torch.randn(1, P, generator=g, dtype=D).expand(T, P).clone()
    elif family == "zero_block":
        G = torch.zeros(T, P, dtype=D)
    elif family in ("zero_row", "negligible_row"):
        if T < 2:
            return None
        G = torch.randn(T, P, generator=g, dtype=D)
        G[T // 2] *= 0.0 if family == "zero_row" else 1e-9  # below float32's epsilon of the others
    elif family == "rank_deficient":
        if T < 2:
            return None
        r = max(1, T // 2)
        G = torch.randn(T, r, generator=g, dtype=D) @ torch.randn(r, P, generator=g, dtype=D)
    elif family == "narrow":  # a bottleneck of 3 directions
        if T < 4:
            return None
        G = torch.zeros(T, P, dtype=D)
        G[:, :3] = torch.randn(T, 3, generator=g, dtype=D)
    elif family.startswith("scale_"):
        G = torch.randn(T, P, generator=g, dtype=D)
        if T > 1:
            s = torch.logspace(0, math.log10(ratio), T, dtype=D)[torch.randperm(T, generator=g)]
            G = G * s[:, None]
    else:
        raise ValueError(family)
    return G.to(dtype)


def cases(spec: dict, dtypes=DTYPES, families=FAMILIES):
    for dtype in dtypes:
        for T in spec["tasks"]:
            for family in families:
                ratios = [spec["ratios"][family]] if family in spec["ratios"] else [None]
                if family.startswith("scale_") and family not in spec["ratios"]:
                    continue
                for seed in spec["seeds"]:
                    for ratio in ratios:
                        G = gradients(family, T, dtype, seed, ratio or 1.0)
                        if G is not None:
                            yield f"{family} T={T} {str(dtype)[6:]} seed={seed}", family, G


def method_variants(claim: str | None = None):
    """(name, kwargs) of every gradient method's variants (that claim ``claim``)."""
    out = []
    for name in GRADIENT:
        for kwargs, claims in CLAIMS[name]:
            if claim is None or claim in claims:
                out.append(pytest.param(name, kwargs, id=name + "".join(f"-{k}={v}" for k, v in kwargs.items())))
    return out


def make(name: str, T: int, **kwargs):
    return WEIGHTINGS.get(name)([f"t{i}" for i in range(T)], [1.0] * T, **kwargs)


def run(name: str, G: torch.Tensor, **kwargs):
    """A fresh method's (weights or None, direction) on G, with the losses all 1."""
    return make(name, G.shape[0], **kwargs).aggregate(G, Rows.every(G))


def _roundoff(G: torch.Tensor, w: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
    """[T]: how well ``g_i . d`` is known from gradients in G's dtype: ``eps ||g_i|| s`` with
    ``s = sum_j |w_j| ||g_j||`` (the size of the terms that make d; ``||d||`` without weights)."""
    G64 = G.double()
    norms = G64.norm(dim=1)
    s = (w.double().abs() * norms).sum() if w is not None else d.double().norm()
    s = torch.maximum(s, d.double().norm())
    return torch.finfo(G.dtype).eps * norms * s


def _informative(G: torch.Tensor) -> torch.Tensor:
    """The rows the methods keep: norm above eps(dtype) times the largest."""
    norms = G.double().norm(dim=1)
    return norms > torch.finfo(G.dtype).eps * norms.max()


# ---------------------------------------------------------------- the claims table
def test_claims_cover_the_registry():
    assert set(CLAIMS) == set(NAMES), (
        f"methods without claims: {set(NAMES) - set(CLAIMS)}; claims of unregistered: {set(CLAIMS) - set(NAMES)}"
    )
    for name, variants in CLAIMS.items():
        gradient = name in GRADIENT
        for kwargs, claims in variants:
            assert (LOSS in claims) != gradient, name
            make(name, 3, **kwargs)  # every variant is a valid construction


# ---------------------------------------------------------------- finite output, zero block
def _check_finite(name: str, kwargs: dict, spec: dict) -> list[str]:
    bad = []
    for label, family, G in cases(spec):
        w, d = run(name, G, **kwargs)
        if not torch.isfinite(d).all() or (w is not None and not torch.isfinite(w).all()):
            bad.append(f"{label}: non-finite {w} {d}")
        elif family == "zero_block" and not torch.equal(d, torch.zeros_like(d)):
            bad.append(f"{label}: non-zero direction on an all-zero block")
        elif w is not None and not torch.allclose(w @ G, d):
            bad.append(f"{label}: direction is not w @ G")
    return bad


@pytest.mark.parametrize("name,kwargs", method_variants())
def test_finite_output_on_hard_inputs(name, kwargs):
    bad = _check_finite(name, kwargs, FAST)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", method_variants())
def test_finite_output_on_hard_inputs_sweep(name, kwargs):
    bad = _check_finite(name, kwargs, SLOW)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize("name", [n for n in NAMES if LOSS in CLAIMS[n][0][1] and n not in ("composed", "gradnorm")])
def test_loss_methods_give_finite_weights_on_hard_losses(name):
    """Loss-based methods: zero, tiny and widely spread losses give finite weights."""
    m = make(name, 3)
    for losses in ([0.0, 1.0, 2.0], [1e-30, 1.0, 1e6], [1e-8, 1e-8, 1e-8]):
        w = m.weights(torch.tensor(losses))
        assert torch.isfinite(w).all(), (losses, w)


# ---------------------------------------------------------------- non-conflicting
# factor on _roundoff; UPGrad and DualProj also carry torchjd's regularisation reg_eps = 1e-4 of the
# trace (their projection is onto the cone of the regularised problem)
NONCONF_FACTOR = {"mgda": 64, "mgda_ub": 64, "nash_mtl": 64, "fairgrad": 64, "cagrad": 64, "upgrad": 64, "dualproj": 64}


def _check_non_conflicting(name: str, kwargs: dict, spec: dict) -> list[str]:
    bad = []
    for label, _, G in cases(spec):
        w, d = run(name, G, **kwargs)
        G64, d64 = G.double(), d.double() if w is None else w.double() @ G.double()
        dots = G64 @ d64
        tol = NONCONF_FACTOR[name] * _roundoff(G, w, d) * max(1, G.shape[0]) ** 0.5
        if name in ("upgrad", "dualproj"):
            tol = tol + 1.01e-4 * float((G64 * G64).sum()) * float(w.double().abs().max())
        if name in ("mgda", "nash_mtl", "fairgrad") or kwargs.get("normalization"):
            # rows left out as negligible (|g_i| <= eps max |g|) are absent: |g_i . d| <= eps max|g| |d|
            tol = torch.where(_informative(G), tol, torch.full_like(tol, math.inf))
        if (dots < -tol).any():
            i = int(torch.argmin(dots + tol))
            bad.append(f"{label}: g_{i} . d = {float(dots[i]):.3g} < -{float(tol[i]):.3g}")
    return bad


@pytest.mark.parametrize("name,kwargs", method_variants(NONCONF))
def test_non_conflicting(name, kwargs):
    bad = _check_non_conflicting(name, kwargs, FAST)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", method_variants(NONCONF))
def test_non_conflicting_sweep(name, kwargs):
    bad = _check_non_conflicting(name, kwargs, SLOW)
    assert not bad, "\n".join(bad[:10])


# ---------------------------------------------------------------- task order
ORDER_FACTOR = 1e3  # on eps * (sum_j |w_j| ||g_j|| + ||d||) * T: both solves are exact on their input
FLOAT32_STATE = {"db_mtl", "moco", "excess_mtl"}  # keep their state (and compute) in float32 by design


def _order_scale(name: str, G: torch.Tensor, w, d) -> float:
    """How far two exact answers on permuted rows may differ: the round-off of d's terms in the
    method's working precision, times the condition number of M for Aligned-MTL (it inverts M's
    square root, whose small eigenvectors are known to eps cond(M) only)."""
    eps = torch.finfo(torch.float32 if name in FLOAT32_STATE else G.dtype).eps
    norms = G.double().norm(dim=1)
    S = float((w.double().abs() * norms).sum()) if w is not None else 0.0
    S = max(S, float(d.double().norm()))
    cond = 1.0
    if name == "aligned_mtl":
        lam = torch.linalg.eigvalsh(G.double() @ G.double().T)
        kept = lam[lam > lam.max() * G.shape[0] * torch.finfo(G.dtype).eps]
        cond = float(lam.max() / kept.min()) if len(kept) else 1.0
    return eps * S * cond


def _check_order(name: str, kwargs: dict, spec: dict) -> list[str]:
    bad = []
    for label, _, G in cases(spec):
        T = G.shape[0]
        perm = torch.randperm(T, generator=torch.Generator().manual_seed(T))
        w, d = run(name, G, **kwargs)
        wp, dp = run(name, G[perm], **kwargs)
        tol = ORDER_FACTOR * T * max(_order_scale(name, G, w, d), _order_scale(name, G[perm], wp, dp))
        err = float((d.double() - dp.double()).norm())
        if not err <= tol:
            bad.append(f"{label}: |d - d_perm| = {err:.3g} > {tol:.3g} (|d| = {float(d.norm()):.3g})")
    return bad


@pytest.mark.parametrize("name,kwargs", method_variants(ORDER))
def test_invariant_to_task_order(name, kwargs):
    bad = _check_order(name, kwargs, FAST)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", method_variants(ORDER))
def test_invariant_to_task_order_sweep(name, kwargs):
    bad = _check_order(name, kwargs, SLOW)
    assert not bad, "\n".join(bad[:10])


# ---------------------------------------------------------------- optimality, in float64
def _full_rank(G: torch.Tensor, keep: torch.Tensor, min_sv: float = 1e-3) -> bool:
    """The informative rows' unit gradients are linearly independent (smallest singular value of U
    above ``min_sv``)."""
    U = G.double()[keep]
    if U.shape[0] == 0:
        return False
    U = U / U.norm(dim=1, keepdim=True)
    return U.shape[0] <= U.shape[1] and float(torch.linalg.svdvals(U).min()) > min_sv


def _gram(G: torch.Tensor) -> torch.Tensor:
    """The method's input in float64: ``G G^T`` computed in G's dtype (as the engine does), then
    widened. The optimality conditions are checked on it in float64: a solver is exact when it
    meets them up to the rounding of its weights to G's dtype (``eps sum_j |w_j| ||g_j||``)."""
    return (G @ G.T).double()


def opt_min_norm(G, w, d, kwargs):
    """MGDA: w on the simplex with ``(M w)_i >= w^T M w`` for every i, equality on the support (on
    the normalised gradients of the informative rows for ``normalization=l2``)."""
    M, w = _gram(G), w.double()
    if kwargs.get("normalization") == "l2":
        keep = _informative(G)
        if not keep.any():
            return None if torch.equal(w, torch.zeros_like(w)) else "non-zero weights on an all-zero block"
        if (w[~keep] != 0).any():
            return "weight on a negligible row"
        n = M.diagonal()[keep].sqrt()
        M, w = M[keep][:, keep] / n[:, None] / n[None, :], w[keep] * n  # weights on the unit gradients
    eps = torch.finfo(G.dtype).eps
    if w.min() < -1e-12 or abs(float(w.sum()) - 1) > 8 * len(w) * eps:
        return f"not on the simplex: {w}"
    norms = M.diagonal().clamp_min(0).sqrt()
    g = M @ w
    q = float(w @ g)
    S = float((w.abs() * norms).sum())
    if math.sqrt(max(q, 0.0)) <= 64 * len(w) * eps * S:
        return None  # |d| at the round-off of its terms: 0 is in the convex hull, d = 0 is the optimum
    tol = 16 * eps * norms * S + 1e-12 * abs(q)
    if (g < q - tol).any():
        return f"(M w)_i < w^T M w: {float((g - q).min()):.3g} (tol {float(tol.max()):.3g})"
    supp = w > 1e-9
    if ((g - q).abs() > tol)[supp].any():
        return f"support not equalised: {float((g - q).abs()[supp].max()):.3g}"
    return None


def opt_cagrad(G, w, d, kwargs):
    """CAGrad (rescale 0), on its input ``M``: d in the ball, ``||d - g0||^2 = (w - 1/n)^T M (w - 1/n)
    <= c^2 ||g0||^2``, and no duality gap, ``min_i (M w)_i = F(w*) = w* . M 1/n + c ||g0|| ||g_w*||``
    with ``w*`` the dual weights read off w; a zero update only when it is optimal (c >= 1 and 0 in
    the convex hull, or c < 1 below the stationarity threshold ``norm_eps``)."""
    c = kwargs.get("c", 0.4)
    M, w, T = _gram(G), w.double(), G.shape[0]
    eps = torch.finfo(G.dtype).eps
    norms = M.diagonal().clamp_min(0).sqrt()
    u = torch.full((T,), 1.0 / T, dtype=torch.float64)
    a, gamma = M @ u, float(u @ M @ u)
    if float(M.trace()) < 1e-4:  # below norm_eps: the plain mean (torchjd's rule)
        return None if torch.allclose(w, u) else f"not the mean below norm_eps: {w}"
    if float(w.abs().max()) == 0:
        if c >= 1:  # zero is optimal only when 0 is in the convex hull (up to round-off)
            _, q = min_norm_point(M.numpy())
            bound = 1e3 * T * eps * float(norms.max()) ** 2
            return None if q <= bound else f"zero update, min-norm {q:.3g} > {bound:.3g}"
        return None  # c < 1: only below the stationarity threshold norm_eps
    S = float(((w - u).abs() * norms).sum())  # the terms of d - g0
    x = w - u
    r2, s2 = float(x @ M @ x), c * c * gamma
    if r2 > s2 + 16 * eps * S * (math.sqrt(s2) + S) + 1e-9 * s2:
        return f"outside the ball: {math.sqrt(r2):.6g} > {math.sqrt(s2):.6g}"
    if float(x.sum()) <= 0:
        return "no dual weights"
    ws = x / x.sum()
    F = float(ws @ a + c * math.sqrt(gamma) * math.sqrt(max(float(ws @ M @ ws), 0.0)))
    primal = float((M @ w).min())
    tol = 64 * T * eps * float(norms.max()) * (float((w.abs() * norms).sum()) + math.sqrt(gamma) * (1 + c))
    if not (primal <= F + tol and F - primal <= tol):
        return f"duality gap {F - primal:.3g} (tol {tol:.3g})"
    return None


def _alpha_fair_check(G, w, alpha: float, clipped: bool):
    keep = _informative(G)
    M, w = _gram(G), w.double()
    if (w[~keep] != 0).any():
        return "weight on a negligible row"
    if not keep.any() or (w == 0).all():
        if not keep.any():
            return None
        Mk = M[keep][:, keep]
        n = Mk.diagonal().sqrt()
        _, q = min_norm_point((Mk / n[:, None] / n[None, :]).numpy())  # ill-posed: 0 in the unit gradients' hull
        bound = 32 * int(keep.sum()) * torch.finfo(G.dtype).eps
        return None if q <= bound else f"zero weights but the hull is at {q:.3g} > {bound:.3g} from 0"
    wk, Mk = w[keep], M[keep][:, keep]
    if (wk <= 0).any():
        return f"non-positive weight {wk}"
    Mw = Mk @ wk
    lhs = Mw * wk ** (1 / alpha)  # w_t^(1/alpha) (M w)_t: 1 (or a common factor when clipped)
    target = lhs.mean() if clipped else torch.ones_like(lhs)
    # rounding of w to G's dtype: (M w)_t known to eps ||g_t|| sum_j w_j ||g_j||, relative to (M w)_t
    norms = Mk.diagonal().sqrt()
    cond = float((norms * (wk * norms).sum() / Mw.abs()).max())
    tol = 1e3 * torch.finfo(G.dtype).eps * cond * len(wk)
    if float((lhs / target - 1).abs().max()) > tol:
        return f"equation residual {float((lhs / target - 1).abs().max()):.3g} (tol {tol:.3g})"
    return None


def opt_nash(G, w, d, kwargs):
    """Nash-MTL: ``a_t (M a)_t = 1`` on the informative rows (max_norm=0; a common factor when
    clipped), 0 on the others; zero weights only with a certificate that 0 is in the hull."""
    return _alpha_fair_check(G, w, 1.0, kwargs.get("max_norm", 1.0) > 0)


def opt_fairgrad(G, w, d, kwargs):
    """FairGrad: ``w_t^(1/alpha) (M w)_t = 1`` on the informative rows, as Nash-MTL."""
    return _alpha_fair_check(G, w, kwargs.get("alpha", 2.0), False)


def opt_imtl_g(G, w, d, kwargs):
    """IMTL-G: equal projections of d on the unit gradients of the informative rows (when those are
    linearly independent), weight 0 on the others, weights summing to 1."""
    keep = _informative(G)
    if (w[~keep] != 0).any():
        return "weight on a negligible row"
    if not _full_rank(G, keep):
        return None
    G64 = G.double()[keep]
    U = G64 / G64.norm(dim=1, keepdim=True)
    d64 = w.double() @ G.double()
    proj = U @ d64
    sv = float(torch.linalg.svdvals(U).min())
    S = float((w.double().abs() * G.double().norm(dim=1)).sum())  # the size of the terms of d
    tol = 1e2 * torch.finfo(G.dtype).eps / sv**2 * S
    if float((proj - proj.mean()).abs().max()) > tol * len(proj) + 1e-300:
        return f"unequal projections {float((proj - proj.mean()).abs().max()):.3g} (tol {tol:.3g})"
    if abs(float(w.double().sum()) - 1) > 1e-6 and float(w.double().abs().sum()) > 0:
        return f"weights sum to {float(w.sum())}"
    return None


def opt_config(G, w, d, kwargs):
    """ConFIG: equal cosines of d with every informative gradient (linearly independent ones), and
    ``||d|| = sum_i g_i . d / ||d||``."""
    keep = _informative(G)
    if (w[~keep] != 0).any():
        return "weight on a negligible row"
    if not _full_rank(G, keep):
        return None
    G64 = G.double()[keep]
    d64 = w.double() @ G.double()
    cos = (G64 / G64.norm(dim=1, keepdim=True)) @ d64 / d64.norm()
    sv = float(torch.linalg.svdvals(G64 / G64.norm(dim=1, keepdim=True)).min())
    tol = 1e3 * torch.finfo(G.dtype).eps / sv**2
    if float((cos - cos.mean()).abs().max()) > tol or float(cos.min()) <= 0:
        return f"cosines {cos}"
    if abs(float(d64.norm() - (G.double() @ (d64 / d64.norm())).sum())) > tol * float(d64.norm()) * len(cos):
        return "length is not the sum of the projections"
    return None


def opt_dual_cone(G, w, d, kwargs, name="upgrad"):
    """UPGrad / DualProj: each projection ``v = u + x`` solves ``min v^T K v, v >= u`` with
    ``K = M / tr(M) + 1e-4 I`` (torchjd's regularisation): x >= 0, K v >= 0, x_i (K v)_i = 0; the
    weights are their sum (UPGrad, u = e_i / n) or the one projection (DualProj, u = 1/n)."""
    T = G.shape[0]
    G64 = G.double()
    M = (G.to(G.dtype) @ G.to(G.dtype).T).double().numpy()  # the method's own input
    U = np.eye(T) / T if name == "upgrad" else np.full((1, T), 1.0 / T)
    V = dual_cone_weights(M, U)
    if float(np.abs(V.sum(0) - w.double().numpy()).max()) > 1e-6 * max(1.0, float(np.abs(V).max())):
        return "weights differ from the projections' sum"
    tr = float(np.trace(M))
    K = (np.zeros_like(M) if tr < 1e-4 else M / tr) + 1e-4 * np.eye(T)
    for u, v in zip(U, V):
        x, Kv = v - u, K @ v
        tol = 1e-9 * (1 + np.abs(v).max())
        if x.min() < -tol or Kv.min() < -tol or np.abs(x * Kv).max() > tol:
            return f"KKT of the projection: x {x.min():.3g}, Kv {Kv.min():.3g}, x.Kv {np.abs(x * Kv).max():.3g}"
    del G64
    return None


OPTIMALITY = {
    "mgda": opt_min_norm,
    "mgda_ub": opt_min_norm,
    "cagrad": opt_cagrad,
    "nash_mtl": opt_nash,
    "fairgrad": opt_fairgrad,
    "imtl_g": opt_imtl_g,
    "imtl": opt_imtl_g,
    "conflict_free": opt_config,
    "upgrad": lambda G, w, d, kw: opt_dual_cone(G, w, d, kw, "upgrad"),
    "dualproj": lambda G, w, d, kw: opt_dual_cone(G, w, d, kw, "dualproj"),
}


def test_every_optimality_claim_has_a_check():
    claimed = {n for n in GRADIENT for _, c in CLAIMS[n] if OPT in c}
    assert claimed == set(OPTIMALITY)


def _check_optimality(name: str, kwargs: dict, spec: dict) -> list[str]:
    bad = []
    for label, _, G in cases(spec):
        w, d = run(name, G, **kwargs)
        why = OPTIMALITY[name](G, w, d, kwargs)
        if why:
            bad.append(f"{label}: {why}")
    return bad


@pytest.mark.parametrize("name,kwargs", method_variants(OPT))
def test_optimality_conditions(name, kwargs):
    bad = _check_optimality(name, kwargs, FAST)
    assert not bad, "\n".join(bad[:10])


@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", method_variants(OPT))
def test_optimality_conditions_sweep(name, kwargs):
    bad = _check_optimality(name, kwargs, SLOW)
    assert not bad, "\n".join(bad[:10])
