"""CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task Learning"):
the update maximises the worst task's improvement within a ball around the mean gradient ``g_0``,
``max_d min_i g_i . d  s.t.  ||d - g_0|| <= c ||g_0||``. Its dual is a problem over the simplex,
``w* = argmin_w  g_w . g_0 + sqrt(phi) ||g_w||`` with ``g_w = G^T w`` and ``phi = c^2 ||g_0||^2``,
and ``d = g_0 + sqrt(phi) / ||g_w*|| g_w*``, i.e. the weights ``1/n + sqrt(phi) / ||g_w*|| w*``
(linear in G). ``rescale`` divides d as in the paper's code: 0 none (torchjd), 1 by ``1 + c^2``
(the code's default), 2 by ``1 + c``. Defaults: ``c = 0.4`` (the paper's NYUv2/Cityscapes value).

The dual is solved exactly on the Gramian (normalised by its trace): at the optimum, with
``beta = ||g_w*|| / sqrt(phi)``, ``g_w*`` is the point of the convex hull of the gradients closest
to ``-beta g_0`` (an MGDA problem on the shifted gradients ``g_i + beta g_0``), and on a fixed
support w is affine in beta, so the condition ``||g_w|| = sqrt(phi) beta`` is a quadratic equation.
A batched grid over beta (non-negative QPs, :mod:`._qp`) brackets the root and gives the candidate
supports; each candidate is solved in closed form and accepted when it satisfies the problem's
optimality conditions (else the grid is refined; after 4 rounds the bracket's interpolation is
used). As in torchjd, the direction is zero (weights 0) when ``||g_w*||`` falls below ``norm_eps``
times the Frobenius norm of G (a Pareto-stationary point).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..config.params import NonNeg
from ..registry import WEIGHTINGS
from ._qp import nonneg_qp
from .engine import GradientWeighting, Rows


def _shifted_min_norm(M: Tensor, a: Tensor, gamma: Tensor, betas: Tensor) -> Tensor:
    """For each beta: the simplex weights of the point of conv(g_i) closest to ``-beta g_0``
    (min-norm point of conv(g_i + beta g_0), via ``min 1/2 x^T K x - 1^T x, x >= 0``, w = x / sum x)."""
    n = M.shape[0]
    ones = torch.ones(n, dtype=M.dtype, device=M.device)
    b = betas[:, None, None]
    K = M + b * (a[:, None] * ones[None, :] + ones[:, None] * a[None, :]) + b**2 * gamma
    K = K + 1e-12 * torch.eye(n, dtype=M.dtype, device=M.device)
    x = nonneg_qp(K, -ones.expand(len(betas), n).contiguous())
    return x / x.sum(-1, keepdim=True).clamp_min(1e-300)


def _on_support(M: Tensor, a: Tensor, s: Tensor, S: Tensor, tol: float = 1e-9) -> Tensor | None:
    """The dual's optimum when its support is ``S`` (bool [n]), or None when S is not the support."""
    idx = S.nonzero()[:, 0]
    k = len(idx)
    KKT = torch.zeros(k + 1, k + 1, dtype=M.dtype, device=M.device)
    KKT[:k, :k] = M[idx][:, idx]
    KKT[:k, k] = 1.0
    KKT[k, :k] = 1.0
    rhs = torch.zeros(k + 1, 2, dtype=M.dtype, device=M.device)
    rhs[k, 0] = 1.0
    rhs[:k, 1] = -a[idx]
    sol = torch.linalg.pinv(KKT) @ rhs
    w0, w1 = sol[:k, 0], sol[:k, 1]
    Ms = M[idx][:, idx]
    A, B, C = w0 @ Ms @ w0, w0 @ Ms @ w1, w1 @ Ms @ w1
    q = C - s**2
    if abs(float(q)) < 1e-14:
        roots = [-A / (2 * B)] if abs(float(B)) > 0 else []
    else:
        disc = B**2 - q * A
        if float(disc) < 0:
            return None
        roots = [(-B + disc.sqrt()) / q, (-B - disc.sqrt()) / q]
    for beta in roots:
        if not float(beta) > 0:
            continue
        ws = w0 + beta * w1
        if float(ws.min()) < -tol:
            continue
        w = torch.zeros_like(a)
        w[idx] = ws.clamp_min(0.0)
        norm = (w @ M @ w).clamp_min(0.0).sqrt()
        if not float(norm) > 0:
            continue
        grad = a + (s / norm) * (M @ w)  # gradient of the dual objective
        mu = grad[idx].mean()
        outside_ok = bool(S.all()) or float(grad[~S].min()) >= float(mu) - 1e-7
        if float((grad[idx] - mu).abs().max()) <= 1e-7 and outside_ok:
            return w
    return None


def cagrad_dual_weights(M: Tensor, c: float, rounds: int = 4, grid: int = 24) -> Tensor:
    """``w*`` [n] on the simplex minimising ``g_w . g_0 + c ||g_0|| ||g_w||`` (M: Gramian, any scale)."""
    n = M.shape[0]
    M = M.double()
    M = M / M.diagonal().sum().clamp_min(1e-300)
    a = M.mean(1)  # g_i . g_0
    gamma = M.mean()  # ||g_0||^2
    s = c * gamma.clamp_min(0.0).sqrt()
    if n == 1 or not float(s) > 0:
        return torch.full((n,), 1.0 / n, dtype=M.dtype, device=M.device)
    lo, hi = float(M.diagonal().max().sqrt() / s) * 1e-10, float(M.diagonal().max().sqrt() / s) * 1.01
    w_lo = w_hi = None
    for _ in range(rounds):
        betas = torch.logspace(
            torch.log10(torch.tensor(lo)).item(),
            torch.log10(torch.tensor(hi)).item(),
            grid,
            dtype=M.dtype,
            device=M.device,
        )
        W = _shifted_min_norm(M, a, gamma, betas)
        h = torch.einsum("bi,ij,bj->b", W, M, W).clamp_min(0.0).sqrt() - s * betas
        below = (h <= 0).nonzero()
        k = int(below[0]) if len(below) else grid - 1
        if k == 0:  # the root lies below the grid: g_w* ~ 0 (Pareto stationary)
            return W[0]
        supports = {tuple((W[i] > 1e-12).tolist()) for i in (k - 1, k)}
        for S in supports:
            w = _on_support(M, a, s, torch.tensor(S, device=M.device))
            if w is not None:
                return w
        lo, hi = float(betas[k - 1]), float(betas[k])
        w_lo, w_hi, h_lo, h_hi = W[k - 1], W[k], h[k - 1], h[k]
    t = h_lo / (h_lo - h_hi).clamp_min(1e-300)
    return (1 - t) * w_lo + t * w_hi


def cagrad_weights(M: Tensor, c: float = 0.4, rescale: int = 1, norm_eps: float = 1e-4) -> Tensor:
    """CAGrad weights [n] from a Gramian ``M`` [n, n] (the update is ``weights @ G``)."""
    n = M.shape[0]
    M64 = M.double()
    tr = M64.diagonal().sum()
    mean = torch.full((n,), 1.0 / n, dtype=torch.float64, device=M.device)
    if float(tr) < norm_eps:  # torchjd zeroes the normalised Gramian: the plain mean gradient
        out = mean
    elif c == 0:
        out = mean
    else:
        Mn = M64 / tr
        w = cagrad_dual_weights(Mn, c)
        gw = (w @ Mn @ w).clamp_min(0.0).sqrt()
        if float(gw) < norm_eps:
            out = torch.zeros_like(mean)
        else:
            out = mean + c * Mn.mean().clamp_min(0.0).sqrt() / gw * w
    if rescale == 1:
        out = out / (1 + c**2)
    elif rescale == 2:
        out = out / (1 + c)
    return out.to(M.dtype)


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
