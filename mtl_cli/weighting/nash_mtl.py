"""Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game"): the Nash
bargaining solution's update is ``sum_t alpha_t g_t`` with ``alpha > 0`` solving
``(G G^T) alpha = 1 / alpha`` (element-wise), i.e. ``g_t . d = 1 / alpha_t`` for every task.

The paper solves it by a sequence of convex (cvxpy) problems; here it is solved in float64 on the
host (numpy) as the minimiser of the convex ``f(a) = a^T M a / 2 - sum_t log a_t`` by damped Newton
steps with a vectorised backtracking line search (one [T, T] solve per iteration, quadratic
convergence). The same solver gives FairGrad's ``M w = w^(-1/alpha)`` (:mod:`.fairgrad`); Nash-MTL
is its ``alpha = 1`` case (:func:`alpha_fair`).

Hard inputs: the equation is solved on the Gramian equilibrated to a unit diagonal
(``C = D^-1 M D^-1``, ``D = diag(||g_t||)``; exact: no ridge, so a task whose gradient is 1e6 times
smaller than another's is solved as accurately as the others). A zero or negligible gradient
(:func:`.engine.informative_rows`) has no solution (``0 = 1 / a_t``): it is left out, weight 0.
When 0 lies in the convex hull of the remaining gradients (a non-negative null vector of the
Gramian: no direction improves every task, and ``f`` is unbounded below) the problem has no
solution: the weights are 0 (a zero update) and the method warns once per run.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..config.params import NonNeg, PosInt
from ..registry import WEIGHTINGS
from ._qp import eps_of, host, min_norm_point, to_torch
from .engine import GradientWeighting, Rows, informative_rows
from .moco import StatefulGradientWeighting

_STEPS = 2.0 ** -np.arange(0, 40, dtype=np.float64)  # line-search step sizes 1, 1/2, ... 2^-39


def ill_posed_tolerance(n: int, dtype: torch.dtype) -> float:
    """The squared distance from 0 to the convex hull of n unit gradients below which the
    bargaining problem counts as ill-posed (0 in the hull up to the Gramian's round-off)."""
    return 32.0 * n * eps_of(dtype)


def _newton(
    C: np.ndarray, r: np.ndarray, alpha: float, v0: np.ndarray | None, max_iter: int
) -> tuple[np.ndarray, bool]:
    """Positive ``v`` with ``C v = r v^(-1/alpha)``: the minimiser of the convex
    ``f(v) = v^T C v / 2 - sum_t r_t h(v_t)`` (``h' = v^(-1/alpha)``: ``log`` for alpha = 1, else
    ``v^p / p``, ``p = 1 - 1/alpha``), from ``v0`` (default: the solution for orthogonal gradients,
    ``r^(alpha / (alpha + 1))``) rescaled to the best multiple on
    its ray, by damped Newton steps (Armijo, all step sizes evaluated at once; full steps once the
    squared Newton decrement is below 1e-6 n). Returns (v, converged: the decrement reached
    round-off, below 1e-20 n)."""
    n = C.shape[0]
    inv = 1.0 / alpha
    p = 1.0 - inv
    log_h = abs(p) < 1e-12

    def h(v: np.ndarray) -> np.ndarray:
        return np.log(v) if log_h else v**p / p

    v = r ** (alpha / (alpha + 1))  # the solution for orthogonal gradients (C = I)
    if v0 is not None and np.isfinite(v0).all() and (v0 > 0).all():
        v = v0.astype(np.float64)
    q = max(float(v @ C @ v), 1e-300)  # best multiple s of v on its ray: s^(1 + 1/alpha) = sum r v^p / q
    v = v * (float((r * v**p).sum()) / q) ** (alpha / (alpha + 1))
    prev = math.inf
    for _ in range(max_iter):
        grad = C @ v - r * v**-inv
        H = C + np.diag(r * inv * v ** (-inv - 1))
        try:
            d = np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            d = np.linalg.lstsq(H, grad, rcond=None)[0]
        dec = float(grad @ d)  # squared Newton decrement
        if dec <= 1e-32 * n or (dec <= 1e-20 * n and dec > 0.25 * prev):
            return v, True  # converged to round-off (the decrement stopped falling quadratically)
        prev = dec
        if dec <= 1e-6 * n and (v > d).all():  # quadratic region: full steps
            v = v - d
            continue
        cand = v[None, :] - _STEPS[:, None] * d[None, :]
        feasible = (cand > 0).all(1)
        safe = np.where(feasible[:, None], cand, 1.0)
        f_cand = 0.5 * ((safe @ C) * safe).sum(1) - (r * h(safe)).sum(1)
        f0 = 0.5 * float(v @ C @ v) - float((r * h(v)).sum())
        ok = feasible & (f_cand <= f0 - 0.25 * _STEPS * dec)
        if not ok.any():  # no decrease left above round-off
            return v, dec <= 1e-20 * n
        v = cand[int(np.argmax(ok))]
    return v, False


def alpha_fair(
    M: np.ndarray, alpha: float, dtype: torch.dtype, w0: np.ndarray | None = None, max_iter: int = 50
) -> tuple[np.ndarray, str]:
    """Weights ``w`` [n] with ``M w = w^(-1/alpha)`` on the informative rows (``alpha > 0``; Nash-MTL:
    ``alpha = 1``), 0 on the others, for a float64 Gramian ``M`` computed in ``dtype``; ``w0``: a
    warm start on M's scale. Status: ``ok``, ``empty`` (no informative row), ``ill_posed`` (0 in
    the convex hull of the gradients: every weight 0) or ``not_converged`` (``max_iter`` reached).

    With ``M = D C D`` (``C``: unit diagonal) and ``w = v / D``, the equation is
    ``C v = D^(1/alpha - 1) v^(-1/alpha)``; the coefficients are divided by their largest, ``kappa``,
    and the solution multiplied back by ``kappa^(alpha / (alpha + 1))`` (exact)."""
    n = M.shape[0]
    w = np.zeros(n)
    keep = informative_rows(M, dtype)
    if not keep.any():
        return w, "empty"
    K = M[np.ix_(keep, keep)]
    D = np.sqrt(np.diag(K))
    C = K / D[:, None] / D[None, :]
    r = D ** (1.0 / alpha - 1.0)
    kappa = float(r.max())
    r = r / kappa
    up = kappa ** (alpha / (alpha + 1))
    v0 = None if w0 is None else w0[keep] * D / up
    v, converged = _newton(C, r, alpha, v0, max_iter)
    # ill-posed iff the unit gradients' hull comes within ill_posed_tolerance of 0 (squared). Any
    # v > 0 with C v > 0 bounds that distance from below: for w on the simplex,
    # (w.Cv)^2 <= (w^T C w)(v^T C v), so w^T C w >= min(C v)^2 / v^T C v; Wolfe's algorithm only runs
    # when that bound does not settle it
    Cv = C @ v
    tol = ill_posed_tolerance(len(K), dtype)
    lower = float(Cv.min()) ** 2 / float(v @ Cv) if converged and Cv.min() > 0 else 0.0
    if lower <= tol and min_norm_point(C)[1] <= tol:
        return w, "ill_posed"
    w[keep] = v * up / D
    return w, "ok" if converged else "not_converged"


def alpha_fair_solve(M: Tensor, alpha: float = 1.0, w0: Tensor | None = None, max_iter: int = 50) -> Tensor:
    """:func:`alpha_fair`'s weights for a Gramian tensor (M's dtype and device)."""
    return to_torch(alpha_fair(host(M), alpha, M.dtype, None if w0 is None else host(w0), max_iter)[0], M)


def nash_weights(M: Tensor, w0: Tensor | None = None, max_iter: int = 50) -> Tensor:
    """Nash-MTL weights ``a > 0`` with ``M a = 1 / a`` on the Gramian ``M`` itself (as the authors'
    code, whose Frobenius normalisation of M is put back in the problem's constraint); 0 on zero
    rows; all 0 when ill-posed. ``w0``: a warm start on the scale of ``M``."""
    return alpha_fair_solve(M, 1.0, w0, max_iter)


def warn_status(method: GradientWeighting, name: str, status: str, rows: Rows) -> None:
    """Warn (once per run and kind) when :func:`alpha_fair` could not solve the problem."""
    tasks = ", ".join(method.task_names[i] for i in rows.index)
    if status == "ill_posed":
        method.warn_once(
            "ill_posed",
            f"weighting {name}: 0 lies in the convex hull of the gradients of tasks {tasks}, so no update "
            "improves every task and the equation has no positive solution: the update is zero at such steps "
            "(Pareto-stationary; shown once per run)",
        )
    elif status == "not_converged":
        method.warn_once(
            "not_converged",
            f"weighting {name}: Newton's method did not converge in max_iter iterations (tasks {tasks}); the "
            "last iterate is used (raise weighting.max_iter; shown once per run)",
        )


@WEIGHTINGS.register("nash_mtl")
class NashMTL(StatefulGradientWeighting):
    """Nash-MTL (Navon et al., ICML 2022), the step decision of Algorithm 1::

        alpha > 0 with (G G^T) alpha = 1 / alpha,    d = alpha @ G      (so ||d||^2 = n, the task count)
        if max_norm > 0 and ||d|| > max_norm:  alpha <- alpha max_norm / ||d||

    as in the authors' code (``max_norm = 1.0``; their Frobenius normalisation of the Gramian is
    a conditioning device that leaves the solution unchanged, and so is ours, the equilibration).
    The equation is solved in float64 on the host by damped Newton (:func:`alpha_fair_solve`, at most ``max_iter``
    iterations, usually under 10), warm-started from the previous solution (``prev_alpha``, a
    buffer; absent tasks keep theirs). The paper's cvxpy sequence (``optim_niter = 20``) stops at a
    residual ``||M a - 1/a|| < 1e-3``; Newton converges to round-off. The paper's
    ``update_weights_every`` is the engine's ``every`` (the weights are reused as they are, the
    norm clipping included). With ``grouping=layer`` the warm start is the last block's solution
    (only the speed depends on it). Zero gradients get weight 0 and keep their warm start; when 0
    lies in the convex hull of the gradients the update is zero and a warning is logged once.
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
        M64 = host(M)
        a, status = alpha_fair(M64, 1.0, M.dtype, host(self.prev_alpha[idx]), self.max_iter)
        warn_status(self, "nash_mtl", status, rows)
        solved = np.flatnonzero(a > 0)  # rows left out (zero, or all when ill-posed) keep their warm start
        if solved.size:
            buf = self.prev_alpha
            buf[idx[torch.from_numpy(solved).to(idx.device)]] = torch.from_numpy(a[solved]).to(buf.dtype).to(buf.device)
        if self.max_norm > 0:
            norm = math.sqrt(max(float(a @ M64 @ a), 0.0))
            if norm > self.max_norm:
                a = a * (self.max_norm / norm)
        return to_torch(a, M)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
