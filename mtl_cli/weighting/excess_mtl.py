"""ExcessMTL (He et al., ICML 2024, "Robust Multi-Task Learning with Excess Risks"): task weights
updated multiplicatively (exponentiated gradient, Eq. 9) from each task's estimated excess risk
``E_t ~ g_t^T H_t^-1 g_t`` (Eq. 6), with the Hessian replaced by AdaGrad's diagonal
``H_t = diag(sqrt(sum_s g_t,s^2))`` (Eq. 7) over the task's gradients so far, each estimate
divided by the task's first one (scale processing, Sec. 3.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import PosInt, Positive
from ..registry import WEIGHTINGS
from .engine import Rows
from .moco import StatefulGradientWeighting


@WEIGHTINGS.register("excess_mtl")
class ExcessMTL(StatefulGradientWeighting):
    """ExcessMTL (He et al., ICML 2024), Algorithm 1, per call (``S`` [T, P], a buffer)::

        S_t   += g_t^2                                       (element-wise)
        E_t    = sum_j g_tj^2 / sqrt(S_tj + 1e-7)            (excess risk proxy)
        r_t    = E_t / E_t^0                                 (E_t^0: the baseline, see below)
        w_t   <- w_t exp(robust_step_size r_t),  then w <- n w / sum w
        update = w @ G

    Weights start at 1 and are normalised to sum to the number of present tasks ``n`` (the
    authors' code and LibMTL; the paper's simplex weights times n, so the update has the scale of
    equal weighting). The baseline ``E_t^0`` is the mean excess risk of the task's first
    ``warmup_steps`` calls, during which its weight does not move (``warmup_steps = 1``, the
    default: the authors' code, where the first call only sets the baseline; the paper's
    Appendix C.1 collects statistics for 3 epochs: set it to 3 x steps per epoch).
    ``robust_step_size`` defaults to 1e-2 (the authors' and LibMTL's value; torchjd uses 1.0).

    Absent tasks keep their state and weight; a present task still in warm-up counts as
    ``r_t = 1`` (neutral) while others move. With ``grouping=layer`` each parameter tensor has its
    own weights and baseline (``S`` is per parameter anyway). ``S`` is reset if the gradient's
    size changes (``source=rep`` with another batch size). State: ``sq_sum`` [T, P], ``task_w``,
    ``baseline``, ``warm_sum``, ``calls`` [blocks, T], all buffers.
    """

    dynamic_buffers = ("sq_sum", "task_w", "baseline", "warm_sum", "calls")

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        robust_step_size: Positive = 1e-2,
        warmup_steps: PosInt = 1,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.robust_step_size, self.warmup_steps = float(robust_step_size), int(warmup_steps)

    def aggregate(self, G: Tensor, rows: Rows | None = None):
        rows = rows if rows is not None else Rows.every(G)
        k, lo, nb, total = rows.block, rows.offset, rows.blocks, rows.size
        index = torch.tensor(rows.index, device=G.device)
        n = len(rows.index)
        T = len(self.task_names)
        sq_sum = self.ensure("sq_sum", (T, total), 0.0, G)
        weights = self.ensure("task_w", (nb, T), 1.0, G)
        baseline = self.ensure("baseline", (nb, T), 0.0, G)
        warm_sum = self.ensure("warm_sum", (nb, T), 0.0, G)
        calls = self.ensure("calls", (nb, T), 0.0, G)
        hi = lo + G.shape[1]
        g2 = G.detach().float() ** 2
        S = sq_sum[index, lo:hi] + g2
        sq_sum[index, lo:hi] = S
        excess = (g2 / torch.sqrt(S + 1e-7)).sum(dim=1)
        calls[k, index] += 1
        c = calls[k, index]
        warming = c <= self.warmup_steps
        warm_sum[k, index] += torch.where(warming, excess, torch.zeros_like(excess))
        done = c == self.warmup_steps
        baseline[k, index] = torch.where(done, warm_sum[k, index] / self.warmup_steps, baseline[k, index])
        ratio = torch.where(warming, torch.ones_like(excess), excess / baseline[k, index].clamp_min(1e-12))
        w = torch.softmax(torch.log(weights[k, index].clamp_min(1e-30)) + self.robust_step_size * ratio, 0) * n
        weights[k, index] = w
        w = w.to(G.dtype)
        return w, w @ G
