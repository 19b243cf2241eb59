"""FairGrad (Ban & Ji, ICML 2024, "Fair Resource Allocation in Multi-Task Learning"): the update
``d = sum_t w_t g_t`` maximises the alpha-fair utility of the tasks' rates ``g_t . d``; its
weights solve ``(G G^T) w = w^(-1/alpha)`` (element-wise power, ``w > 0``). ``alpha = 1`` is
proportional fairness (Nash-MTL's equation), ``alpha -> 0`` linear scalarisation (equal weights),
large ``alpha`` approaches max-min fairness (MGDA-like).

Solved in torch by the damped Newton method of :func:`.nash_mtl.alpha_fair_solve` on the
Gramian divided by its Frobenius norm ``c``, then rescaled exactly: the solution on ``M`` is
``w' c^(-alpha / (alpha + 1))`` where ``w'`` solves it on ``M / c``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import NonNeg, PosInt
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows
from .nash_mtl import _solver_dtype, alpha_fair_solve


def fairgrad_weights(M: Tensor, alpha: float = 2.0, max_iter: int = 50) -> Tensor:
    """FairGrad weights on a Gramian ``M`` [n, n]: ``M w = w^(-1/alpha)``; ``alpha = 0``: ones."""
    n = M.shape[0]
    if alpha == 0:
        return torch.ones(n, dtype=_solver_dtype(M.device), device=M.device)
    M = M.to(_solver_dtype(M.device))
    c = torch.linalg.matrix_norm(M).clamp_min(1e-30)
    return alpha_fair_solve(M / c, alpha, None, max_iter) * c ** (-alpha / (alpha + 1))


@WEIGHTINGS.register("fairgrad")
class FairGrad(GradientWeighting):
    """FairGrad (Ban & Ji, ICML 2024), Algorithm 1: ``w > 0`` with ``(G G^T) w = w^(-1/alpha)``,
    update ``w @ G``.

    ``alpha`` (default 2.0: the value of the authors' released run scripts for their MTL
    benchmarks; the paper also reports 1.0 = Nash-MTL's equation and other values) must be >= 0;
    ``alpha = 0`` gives equal weights 1 (the equation's limit; linear scalarisation). The authors
    solve the equation with ``scipy.optimize.least_squares`` from the uniform point each step;
    here it is solved in torch (float64 on G's device, :func:`fairgrad_weights`), to round-off,
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
        return fairgrad_weights(M, self.alpha, self.max_iter).to(M.dtype)
