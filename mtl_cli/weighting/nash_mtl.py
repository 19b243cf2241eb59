"""Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game"): the Nash
bargaining solution's update is ``sum_t alpha_t g_t`` with ``alpha > 0`` solving
``(G G^T) alpha = 1 / alpha`` (element-wise), i.e. ``g_t . d = 1 / alpha_t`` for every task.

The paper solves it by a sequence of convex (cvxpy) problems; here it is solved in torch as the
minimiser of the convex ``f(a) = a^T M a / 2 - sum_t log a_t`` by damped Newton steps with a
vectorised backtracking line search (one [T, T] solve per iteration, quadratic convergence). The
same solver gives FairGrad's ``M w = w^(-1/alpha)`` (:mod:`.fairgrad`); Nash-MTL is its
``alpha = 1`` case.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import NonNeg, PosInt
from ..registry import WEIGHTINGS
from .engine import Rows
from .moco import StatefulGradientWeighting

_STEPS = 2.0 ** -torch.arange(0, 40, dtype=torch.float64)  # line-search step sizes 1, 1/2, ... 2^-39


def _solver_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def alpha_fair_solve(
    M: Tensor,
    alpha: float = 1.0,
    w0: Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-20,
    ridge: float = 1e-10,
) -> Tensor:
    """Positive ``w`` [n] with ``M w = w^(-1/alpha)`` (``alpha > 0``; Nash-MTL: ``alpha = 1``).

    ``w`` minimises the convex ``f(w) = w^T M w / 2 - sum_t h(w_t)`` with ``h' = w^(-1/alpha)``
    (``h = log`` for alpha = 1, else ``w^p / p``, ``p = 1 - 1/alpha``). From ``w0`` (default ones),
    first rescaled to the best multiple along its ray, each iteration takes the Newton step
    ``d = (M + diag(h''))^-1 grad f`` and the largest ``t`` in {1, 1/2, ...} that keeps ``w - t d``
    positive and decreases ``f`` enough (Armijo, all candidate steps evaluated at once). Stops
    when the squared Newton decrement ``grad . d`` is below ``tol`` (M is best pre-scaled to unit
    norm) or after ``max_iter`` iterations. ``ridge`` (times the mean diagonal) keeps a singular
    ``M`` (linearly dependent gradients) solvable. Computed in float64 (float32 on MPS).
    """
    dtype = _solver_dtype(M.device)
    n = M.shape[0]
    M = M.to(dtype)
    M = M + ridge * M.diagonal().mean().clamp_min(1e-30) * torch.eye(n, dtype=dtype, device=M.device)
    inv = 1.0 / alpha
    p = 1.0 - inv

    def h(w: Tensor) -> Tensor:
        return torch.log(w) if abs(p) < 1e-12 else w**p / p

    w = torch.ones(n, dtype=dtype, device=M.device) if w0 is None else w0.to(dtype).clamp_min(1e-12)
    # best multiple s of w on its ray: s^(1 + 1/alpha) = sum w^p / (w^T M w)
    q = (w @ M @ w).clamp_min(1e-30)
    w = w * ((w**p).sum() / q) ** (alpha / (alpha + 1))
    steps = _STEPS.to(device=M.device, dtype=dtype)
    for _ in range(max_iter):
        grad = M @ w - w**-inv
        H = M + torch.diag(inv * w ** (-inv - 1))
        d = torch.linalg.solve(H, grad)
        dec = grad @ d
        if float(dec) <= tol:
            break
        cand = w[None, :] - steps[:, None] * d[None, :]
        feasible = (cand > 0).all(dim=1)
        safe = torch.where(feasible[:, None], cand, torch.ones_like(cand))
        f_cand = 0.5 * ((safe @ M) * safe).sum(1) - h(safe).sum(1)
        f0 = 0.5 * w @ M @ w - h(w).sum()
        ok = feasible & (f_cand <= f0 - 0.25 * steps * dec)
        if not bool(ok.any()):
            break
        w = cand[int(ok.to(torch.int8).argmax())]
    return w


def nash_weights(M: Tensor, w0: Tensor | None = None, max_iter: int = 50) -> Tensor:
    """Nash-MTL weights ``a > 0`` with ``M a = 1 / a`` on the Gramian ``M`` itself (as the
    authors' code: it divides M by its Frobenius norm ``c`` but puts ``c`` back in the problem's
    constraint). Solved on ``M / c`` (scale-free tolerances) and rescaled exactly: ``a = a' / sqrt(c)``.
    ``w0``: a warm start on the scale of ``M`` (the previous step's weights)."""
    c = torch.linalg.matrix_norm(M.to(_solver_dtype(M.device))).clamp_min(1e-30)
    start = None if w0 is None else w0.to(c.dtype) * c.sqrt()
    return alpha_fair_solve(M / c, 1.0, start, max_iter) / c.sqrt()


@WEIGHTINGS.register("nash_mtl")
class NashMTL(StatefulGradientWeighting):
    """Nash-MTL (Navon et al., ICML 2022), the step decision of Algorithm 1::

        alpha > 0 with (G G^T) alpha = 1 / alpha,    d = alpha @ G      (so ||d||^2 = n, the task count)
        if max_norm > 0 and ||d|| > max_norm:  alpha <- alpha max_norm / ||d||

    as in the authors' code (``max_norm = 1.0``; their Frobenius normalisation of the Gramian is
    a conditioning device that leaves the solution unchanged, and so is ours). The
    equation is solved in torch by damped Newton (:func:`alpha_fair_solve`, at most ``max_iter``
    iterations, usually under 10), warm-started from the previous solution (``prev_alpha``, a
    buffer; absent tasks keep theirs). The paper's cvxpy sequence (``optim_niter = 20``) stops at a
    residual ``||M a - 1/a|| < 1e-3``; Newton converges to round-off. The paper's
    ``update_weights_every`` is the engine's ``every`` (the weights are reused as they are, the
    norm clipping included). With ``grouping=layer`` the warm start is the last block's solution
    (only the speed depends on it).
    """

    prev_alpha: Tensor  # [T] buffer: the last solution (warm start)

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        max_norm: NonNeg = 1.0,
        max_iter: PosInt = 50,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.max_norm, self.max_iter = float(max_norm), int(max_iter)
        self.register_buffer("prev_alpha", torch.ones(len(task_names)))

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        idx = torch.tensor(rows.index, device=self.prev_alpha.device)
        prev = self.prev_alpha[idx].to(M.device)
        a = nash_weights(M, prev, self.max_iter)
        self.prev_alpha[idx] = a.to(self.prev_alpha.dtype).to(self.prev_alpha.device)
        if self.max_norm > 0:
            norm = (a @ M.to(a.dtype) @ a).clamp_min(0).sqrt()
            a = torch.where(norm > self.max_norm, a * self.max_norm / norm, a)
        return a.to(M.dtype)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
