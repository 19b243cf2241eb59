"""CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task Learning"):
the update maximises the worst task's improvement within a ball around the mean gradient ``g_0``,
``max_d min_i g_i . d  s.t.  ||d - g_0|| <= c ||g_0||``. Its dual is a problem over the simplex,
``w* = argmin_w  g_w . g_0 + sqrt(phi) ||g_w||`` with ``g_w = G^T w`` and ``phi = c^2 ||g_0||^2``,
and ``d = g_0 + sqrt(phi) / ||g_w*|| g_w*``, i.e. the weights ``1/n + sqrt(phi) / ||g_w*|| w*``
(linear in G). ``rescale`` divides d as in the paper's code: 0 none (torchjd), 1 by ``1 + c^2``
(the code's default), 2 by ``1 + c``. Defaults: ``c = 0.4`` (the paper's NYUv2/Cityscapes value).

The dual is solved exactly on the Gramian (normalised by its trace), in float64 on the host: at
the optimum, with ``beta = ||g_w*|| / sqrt(phi)``, ``g_w*`` is the point of the convex hull of the
gradients closest to ``-beta g_0``, i.e. ``w*`` is the min-norm point of the hull of the shifted
gradients ``g_i + beta g_0`` (Wolfe's algorithm, :func:`._qp.min_norm_point`), and ``beta`` is a
*positive* root of ``h(beta) = ||g_w(beta)|| - sqrt(phi) beta``. ``h`` is continuous, negative for
large ``beta`` and positive just above 0 unless ``g_w* = 0`` (then ``h(0) = 0`` is the trivial
root, which says nothing about the optimum when 0 lies in the convex hull of the gradients and
``c < 1``). The positive root is bracketed and bisected; on the support found at each trial
``beta`` the weights are affine in ``beta`` and the root is the solution of a quadratic equation,
accepted when it satisfies the dual's optimality conditions (usually at the first or second trial).
When no positive root exists (``c >= 1`` with 0 in the convex hull: ``d = 0`` is optimal), or
``||g_w*||`` falls below ``norm_eps`` times ``sum_i w*_i ||g_i||`` (the gradients it combines cancel:
a Pareto-stationary point up to ``norm_eps``), the direction is zero (weights 0). torchjd compares
``||g_w*||`` with ``norm_eps`` times the Frobenius norm of G instead, which takes a task whose
gradient is 1e4 times smaller than the others for a stationary point; ours is relative to the
gradients in ``g_w*``. With ``c >= 1`` the update never conflicts with a task (``d = 0`` is
feasible).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from torch import Tensor

from ..config.params import NonNeg
from ..registry import WEIGHTINGS
from ._qp import host, min_norm_point, refined_solve, to_torch
from .engine import GradientWeighting, Rows


def _on_support(M: np.ndarray, a: np.ndarray, s: float, S: np.ndarray, tol: float = 1e-10) -> np.ndarray | None:
    """The dual's optimum when its support is ``S`` (indices), or None when S is not its support."""
    k = len(S)
    KKT = np.zeros((k + 1, k + 1))
    KKT[:k, :k] = M[np.ix_(S, S)]
    KKT[:k, k] = 1.0
    KKT[k, :k] = 1.0
    rhs = np.zeros((k + 1, 2))
    rhs[k, 0] = 1.0
    rhs[:k, 1] = -a[S]
    sol = refined_solve(KKT, rhs)
    w0, w1 = sol[:k, 0], sol[:k, 1]  # w(beta) = w0 + beta w1 on the support
    Ms = M[np.ix_(S, S)]
    A, B, C = float(w0 @ Ms @ w0), float(w0 @ Ms @ w1), float(w1 @ Ms @ w1)
    q = C - s**2  # A + 2 B beta + q beta^2 = 0
    if abs(q) <= 1e-14 * (abs(C) + s**2):
        roots = [-A / (2 * B)] if B != 0 else []
    else:
        disc = B * B - q * A
        if disc < 0:
            return None
        r = math.sqrt(disc)
        roots = [(-B + r) / q, (-B - r) / q]
    norms = np.sqrt(np.clip(np.diag(M), 0.0, None))
    g0 = math.sqrt(max(float(M.mean()), 0.0))
    for beta in sorted(roots):
        if not beta > 0:
            continue
        ws = w0 + beta * w1
        if ws.min() < -tol:
            continue
        w = np.zeros(len(a))
        w[S] = np.clip(ws, 0.0, None)
        w /= w.sum()
        Mw = M @ w
        gw = math.sqrt(max(float(w @ Mw), 0.0))
        if not gw > 0:
            continue
        grad = a + (s / gw) * Mw  # gradient of the dual objective; at the optimum >= F(w), = on S
        F = float(w @ grad)
        slack = tol * (norms * (g0 + s) + abs(F))
        inside = np.zeros(len(a), dtype=bool)
        inside[S] = True
        if (np.abs(grad[inside] - F) <= slack[inside]).all() and (grad[~inside] >= F - slack[~inside]).all():
            return w
    return None


def cagrad_dual(M: np.ndarray, c: float, max_trials: int = 200) -> np.ndarray | None:
    """``w*`` [n] on the simplex minimising ``g_w . g_0 + c ||g_0|| ||g_w||`` (M: a float64 Gramian,
    trace-normalised), or None when the minimum is at ``g_w = 0`` (no positive root: the zero
    direction is optimal)."""
    n = M.shape[0]
    a = M.mean(1)  # g_i . g_0
    s = c * math.sqrt(max(float(M.mean()), 0.0))  # sqrt(phi)
    if n == 1 or not s > 0:
        return np.full(n, 1.0 / n)
    tried: set[tuple[int, ...]] = set()

    def h(beta: float) -> tuple[np.ndarray, float]:
        K = M + beta * (a[:, None] + a[None, :]) + beta * beta * float(M.mean())
        w = min_norm_point(K)[0]
        return w, math.sqrt(max(float(w @ M @ w), 0.0)) - s * beta

    def exact(w: np.ndarray) -> np.ndarray | None:
        S = tuple(int(i) for i in np.flatnonzero(w > 0))
        if S in tried:
            return None
        tried.add(S)
        return _on_support(M, a, s, np.array(S))

    hi = 1.01 * math.sqrt(float(np.diag(M).max())) / s  # ||g_w|| <= max ||g_i|| < s hi: h(hi) < 0
    w_hi, h_hi = h(hi)
    found = exact(w_hi)
    if found is not None:
        return found
    lo, w_lo, h_lo = hi, w_hi, h_hi
    for k in range(1, 17):  # a lower end where h > 0
        lo = hi * 10.0**-k
        w_lo, h_lo = h(lo)
        found = exact(w_lo)
        if found is not None:
            return found
        if h_lo > 0:
            break
        hi, w_hi, h_hi = lo, w_lo, h_lo
    else:
        return None  # h <= 0 down to 1e-16 hi: g_w* = 0
    for _ in range(max_trials):
        if hi / lo - 1 < 1e-14:
            break
        mid = math.sqrt(lo * hi)
        w_mid, h_mid = h(mid)
        found = exact(w_mid)
        if found is not None:
            return found
        if h_mid > 0:
            lo, w_lo, h_lo = mid, w_mid, h_mid
        else:
            hi, w_hi, h_hi = mid, w_mid, h_mid
    t = h_lo / max(h_lo - h_hi, 1e-300)  # not reached in practice: interpolate the bracket
    return (1 - t) * w_lo + t * w_hi


def cagrad_dual_weights(M: Tensor, c: float) -> Tensor:
    """``w*`` [n] on the simplex minimising ``g_w . g_0 + c ||g_0|| ||g_w||`` (M: Gramian, any scale;
    MGDA's min-norm weights when that minimum is at ``g_w = 0``)."""
    M64 = host(M)
    M64 = M64 / max(float(np.trace(M64)), 1e-300)
    w = cagrad_dual(M64, c)
    return to_torch(min_norm_point(M64)[0] if w is None else w, M)


def cagrad_weights(M: Tensor, c: float = 0.4, rescale: int = 1, norm_eps: float = 1e-4) -> Tensor:
    """CAGrad weights [n] from a Gramian ``M`` [n, n] (the update is ``weights @ G``)."""
    n = M.shape[0]
    M64 = host(M)
    tr = float(np.trace(M64))
    mean = np.full(n, 1.0 / n)
    if tr < norm_eps or c == 0:  # torchjd zeroes the normalised Gramian: the plain mean gradient
        out = mean
    else:
        Mn = M64 / tr
        w = cagrad_dual(Mn, c)
        gw = 0.0 if w is None else math.sqrt(max(float(w @ Mn @ w), 0.0))
        combined = 0.0 if w is None else float(w @ np.sqrt(np.clip(np.diag(Mn), 0.0, None)))  # sum w_i |g_i|
        if w is None or gw < norm_eps * combined:
            out = np.zeros(n)
        else:
            out = mean + c * math.sqrt(max(float(Mn.mean()), 0.0)) / gw * w
    if rescale == 1:
        out = out / (1 + c**2)
    elif rescale == 2:
        out = out / (1 + c)
    return to_torch(out, M)


@WEIGHTINGS.register("cagrad")
class CAGrad(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        c: NonNeg = 0.4,
        rescale: Literal[0, 1, 2] = 1,
        norm_eps: NonNeg = 1e-4,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.c, self.rescale, self.norm_eps = float(c), rescale, norm_eps

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return cagrad_weights(M, self.c, self.rescale, self.norm_eps)
