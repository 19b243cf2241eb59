"""MGDA (Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as Multi-Objective Optimization"): the
minimum-norm point of the convex hull of the task gradients,
``w* = argmin_{w in simplex} || sum_t w_t g_t ||^2``, found on the Gramian by a primal active-set
method (exact where the paper's Algorithm 2, Frank-Wolfe, is approximate; the two-task case has
the closed form
``w_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``). The update is ``sum_t w*_t g_t``, a
common descent direction (zero at a Pareto-stationary point).

``normalization`` rescales each gradient first, as in the paper's code: ``none`` (default),
``l2`` (unit norm), ``loss`` (divided by the loss) or ``loss+`` (loss times norm).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def _kkt(M: Tensor, S: list[int]) -> Tensor:
    """Minimiser of ``w^T M w`` over ``sum w = 1`` with support ``S`` (least squares when singular)."""
    k = len(S)
    A = torch.zeros(k + 1, k + 1, dtype=M.dtype, device=M.device)
    A[:k, :k] = M[S][:, S]
    A[:k, k] = -1.0
    A[k, :k] = 1.0
    b = torch.zeros(k + 1, dtype=M.dtype, device=M.device)
    b[k] = 1.0
    return torch.linalg.lstsq(A, b[:, None]).solution[:k, 0]


def min_norm_weights(M: Tensor, max_iter: int = 100, tol: float = 1e-7) -> Tensor:
    """Weights on the simplex minimising ``w^T M w`` (M: a Gramian [n, n]), by a primal active-set
    method: exact up to round-off after at most a few passes per task, in float32 on M's device."""
    M = M.float()
    n = M.shape[0]
    if n == 1:
        return torch.ones(1, device=M.device)
    if n == 2:
        a, b, c = M[0, 0], M[0, 1], M[1, 1]
        denom = (a - 2 * b + c).clamp_min(1e-12)
        w1 = ((c - b) / denom).clamp(0.0, 1.0)
        return torch.stack([w1, 1 - w1])
    scale = M.diagonal().max().clamp_min(1e-30)
    M = M / scale  # scale-free tolerances
    k = int(torch.argmin(M.diagonal()))
    w = torch.zeros(n, device=M.device)
    w[k] = 1.0
    S = [k]
    for _ in range(max_iter * n):
        grad = M @ w
        lam = w @ grad
        j = int(torch.argmin(grad))
        if float(grad[j]) >= float(lam) - tol or j in S:
            break
        S.append(j)
        while True:  # move toward the support's optimum; drop a weight that reaches 0
            target = _kkt(M, S)
            if bool((target >= 0).all()):
                w = torch.zeros_like(w)
                w[S] = target
                break
            cur = w[S]
            neg = target < 0
            alpha = float((cur[neg] / (cur[neg] - target[neg])).min().clamp(0.0, 1.0))
            new = cur + alpha * (target - cur)
            w = torch.zeros_like(w)
            w[S] = new.clamp_min(0.0)
            S = [i for i in S if float(w[i]) > 1e-12]
    return w / w.sum()


@WEIGHTINGS.register("mgda")
class MGDA(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        normalization: Literal["none", "l2", "loss", "loss+"] = "none",
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.normalization = normalization

    def _scales(self, M: Tensor, losses: Tensor) -> Tensor:
        norms = M.diagonal().clamp_min(0).sqrt().clamp_min(1e-12)
        if self.normalization == "l2":
            return 1.0 / norms
        if self.normalization in ("loss", "loss+"):
            loss = losses.to(M.dtype).clamp_min(1e-12)
            return 1.0 / (loss * (norms if self.normalization == "loss+" else 1.0))
        return torch.ones(M.shape[0], device=M.device, dtype=M.dtype)

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        s = self._scales(M, rows.losses)
        return min_norm_weights(M * s[:, None] * s[None, :]).to(M.dtype) * s  # weights on the raw gradients

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return node.get("normalization", "none") in ("l2", "loss")


@WEIGHTINGS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018): MGDA on the gradients with respect to the shared
    representation (an upper bound of the parameter objective), one encoder backward per step
    instead of one per task. Same as ``weighting=mgda weighting.source=rep``."""

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        source: Literal["params", "rep"] = "rep",
        **kwargs,
    ):
        super().__init__(task_names, task_weights, source=source, **kwargs)
