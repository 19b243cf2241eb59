"""UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"): each task
gradient ``g_i`` is projected onto the dual cone of the gradients, ``{x: G x >= 0}``, and the
projections are averaged. By the paper's Proposition 1 the projection of ``G^T u`` is ``G^T v`` with
``v = argmin_{v >= u} v^T M v`` (``M = G G^T``), so the weights are
``w = sum_i argmin_{v >= e_i / n} v^T M v`` and the update is ``w @ G`` (linear in G: every-k reuse
works). The non-negative QPs are solved together by a batched active-set method in float64 on
the host (:mod:`._qp`), exact up to round-off. As in torchjd (``UPGradWeighting`` with its default
``QuadprogProjector``), ``M`` is divided by its trace (zeroed when the trace is below ``norm_eps``)
and ``reg_eps I`` is added, which keeps the QP strictly convex; the preference vector is the mean.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..config.params import NonNeg
from ..registry import WEIGHTINGS
from ._qp import dual_cone_weights, host, to_torch
from .engine import GradientWeighting, Rows


def upgrad_weights(M: Tensor, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Tensor:
    """UPGrad weights [n] from a Gramian ``M`` [n, n] (M's dtype and device)."""
    n = M.shape[0]
    return to_torch(dual_cone_weights(host(M), np.eye(n) / n, norm_eps, reg_eps).sum(0), M)


@WEIGHTINGS.register("upgrad")
class UPGrad(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        norm_eps: NonNeg = 1e-4,
        reg_eps: NonNeg = 1e-4,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.norm_eps, self.reg_eps = norm_eps, reg_eps

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return upgrad_weights(M, self.norm_eps, self.reg_eps)
