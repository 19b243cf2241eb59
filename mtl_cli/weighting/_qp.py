"""Small quadratic programs on Gramians, solved in torch (shared by UPGrad, DualProj and CAGrad).

:func:`nonneg_qp` solves a batch of ``min_x 1/2 x^T K x + q^T x  s.t.  x >= 0`` by the
Lawson-Hanson active-set method written on ``K`` (the normal-equations form of NNLS), all problems
of the batch at once (one batched linear solve per iteration, at most ``3 n + 20`` iterations):
exact up to round-off once the active set is found, and feasible (``x >= 0``) at every iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _masked_solve(K: Tensor, rhs: Tensor, P: Tensor) -> Tensor:
    """For each problem b: ``z[P] = K[P, P]^{-1} rhs[P]``, ``z[~P] = 0`` (pseudo-inverse when singular)."""
    n = K.shape[-1]
    eye = torch.eye(n, dtype=K.dtype, device=K.device).expand_as(K)
    both = P[:, :, None] & P[:, None, :]
    A = torch.where(both, K, eye)
    b = torch.where(P, rhs, torch.zeros_like(rhs))
    z, info = torch.linalg.solve_ex(A, b[..., None])
    z = z[..., 0]
    bad = (info != 0) | ~torch.isfinite(z).all(-1)
    if bool(bad.any()):
        z = torch.where(bad[:, None], (torch.linalg.pinv(A, hermitian=True) @ b[..., None])[..., 0], z)
    return torch.where(P, z, torch.zeros_like(z))


def nonneg_qp(K: Tensor, q: Tensor, tol: float = 1e-12, max_iter: int | None = None) -> Tensor:
    """Minimisers of ``1/2 x^T K x + q^T x`` over ``x >= 0`` for K [B, n, n] (symmetric PSD, scaled
    to O(1)) and q [B, n] (Lawson-Hanson active set, batched)."""
    B, n = q.shape
    x = torch.zeros_like(q)
    P = torch.zeros(B, n, dtype=torch.bool, device=q.device)
    outer = torch.ones(B, dtype=torch.bool, device=q.device)  # x is the optimum on its support
    done = torch.zeros(B, dtype=torch.bool, device=q.device)
    rows = torch.arange(B, device=q.device)
    for _ in range(max_iter or 3 * n + 20):
        w = -(K @ x[..., None])[..., 0] - q  # minus the gradient
        wmax, j = torch.where(P, torch.full_like(w, -torch.inf), w).max(-1)
        done = done | (outer & (wmax <= tol))
        if bool(done.all()):
            break
        add = outer & ~done
        P = P.clone()
        P[rows[add], j[add]] = True
        z = _masked_solve(K, -q, P)
        feasible = ((z > 0) | ~P).all(-1)
        blocking = P & (z <= 0)
        ratio = torch.where(blocking, x / (x - z).clamp_min(1e-300), torch.full_like(x, torch.inf))
        alpha = ratio.min(-1).values.clamp(0.0, 1.0)
        stepped = (x + alpha[:, None] * (z - x)).clamp_min(0.0)
        keep = P & (stepped > tol * (1 + stepped.amax(-1, keepdim=True)))
        stepped = torch.where(keep, stepped, torch.zeros_like(stepped))
        active = ~done
        x = torch.where((active & feasible)[:, None], z, torch.where(active[:, None], stepped, x))
        P = torch.where((active & ~feasible)[:, None], keep, P)
        outer = torch.where(active, feasible, outer)
    return x


def dual_cone_weights(M: Tensor, U: Tensor, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Tensor:
    """Weights ``v`` of the projections of ``G^T u`` (u: the rows of U [k, n], non-negative) onto the
    dual cone ``{x: G x >= 0}``, given the Gramian ``M = G G^T`` [n, n]: ``v = argmin_{v >= u} v^T M v``
    (Proposition 1 of Quinton & Rey 2024), on ``M`` normalised by its trace (zero when the trace is
    below ``norm_eps``) plus ``reg_eps I``, as torchjd does. Float64 inside; returns U's dtype."""
    M64 = M.double()
    tr = M64.diagonal().sum()
    M64 = torch.where(tr < norm_eps, torch.zeros_like(M64), M64 / tr.clamp_min(1e-300))
    M64 = M64 + reg_eps * torch.eye(M.shape[0], dtype=M64.dtype, device=M64.device)
    U64 = U.double()
    k = U64.shape[0]
    K = M64.expand(k, -1, -1)
    x = nonneg_qp(K, U64 @ M64)  # v = u + x: min 1/2 x^T M x + (M u)^T x, x >= 0
    return (U64 + x).to(U.dtype)
