"""FairGrad (Ban & Ji, ICML 2024, "Fair Resource Allocation in Multi-Task Learning"): the update
``d = sum_t w_t g_t`` maximises the alpha-fair utility of the tasks' rates ``g_t . d``; its
weights solve ``(G G^T) w = w^(-1/alpha)`` (element-wise power, ``w > 0``). ``alpha = 1`` is
proportional fairness (Nash-MTL's equation), ``alpha -> 0`` linear scalarisation (equal weights),
large ``alpha`` approaches max-min fairness (MGDA-like).

Solved in float64 on the host by the damped Newton method of :func:`.nash_mtl.alpha_fair` on the
Gramian equilibrated to a unit diagonal, then rescaled exactly (no ridge: tasks with small
gradients are solved as accurately as the others). Zero and negligible gradients get weight 0
(the equation has no solution for them); when 0 lies in the convex hull of the others the weights
are 0 (a zero update) and the method warns once per run, as Nash-MTL.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..config.params import NonNeg, PosInt
from ..registry import WEIGHTINGS
from ._qp import host, to_torch
from .engine import GradientWeighting, Rows
from .nash_mtl import alpha_fair, warn_status


def fairgrad_solve(M: Tensor, alpha: float = 2.0, max_iter: int = 50) -> tuple[Tensor, str]:
    """FairGrad weights on a Gramian ``M`` [n, n] (``M w = w^(-1/alpha)``; ``alpha = 0``: ``1/n``,
    as torchjd, the equation's limit up to the update's scale) and :func:`.nash_mtl.alpha_fair`'s
    status."""
    n = M.shape[0]
    if alpha == 0:
        return to_torch(np.full(n, 1.0 / n), M), "ok"
    w, status = alpha_fair(host(M), alpha, M.dtype, None, max_iter)
    return to_torch(w, M), status


def fairgrad_weights(M: Tensor, alpha: float = 2.0, max_iter: int = 50) -> Tensor:
    """FairGrad weights on a Gramian ``M`` [n, n] (M's dtype and device), see :func:`fairgrad_solve`."""
    return fairgrad_solve(M, alpha, max_iter)[0]


@WEIGHTINGS.register("fairgrad")
class FairGrad(GradientWeighting):
    """FairGrad (Ban & Ji, ICML 2024), Algorithm 1: ``w > 0`` with ``(G G^T) w = w^(-1/alpha)``,
    update ``w @ G``.

    ``alpha`` (default 2.0: the value of the authors' released run scripts for their MTL
    benchmarks; the paper also reports 1.0 = Nash-MTL's equation and other values) must be >= 0;
    ``alpha = 0`` gives equal weights ``1/n`` (linear scalarisation, as torchjd). The authors
    solve the equation with ``scipy.optimize.least_squares`` from the uniform point each step;
    here it is solved in float64 on the host (:func:`fairgrad_weights`), to round-off,
    in at most ``max_iter`` damped Newton iterations (usually under 10), from the ray-scaled
    uniform point. The raw Gramian is used (no normalisation of the weights): the update's norm
    follows the gradients' (``g_t . d = w_t^(-1/alpha)``).
    """

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        alpha: NonNeg = 2.0,
        max_iter: PosInt = 50,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.alpha, self.max_iter = float(alpha), int(max_iter)

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        w, status = fairgrad_solve(M, self.alpha, self.max_iter)
        warn_status(self, "fairgrad", status, rows)
        return w
