"""GLS: the geometric loss strategy (geometric mean of the task losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting


@WEIGHTINGS.register("gls")
class GeometricLossStrategy(Weighting):
    r"""Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
    Strategy for Multi-Task Learning", CVPR Workshops 2019.

    The total is the geometric mean of the losses of the tasks present this step, computed in
    log space for stability::

        total = (prod_t L_t)^(1/T) = exp(mean_t log L_t)
        weights (logged) = d total / d L_t = total / (T * L_t)      (detached)

    The paper has no task weights of its own, so static task weights ``w_t`` (1 by default)
    act as exponents: ``total = exp(sum_t w_t log L_t / sum_t w_t)``, which reduces to the above.
    ``log`` is taken of ``max(L_t, eps)`` so that an exact zero loss cannot give ``-inf``.
    Absent tasks (``ctx.present`` 0) are left out of the mean (T counts present tasks only) and
    get weight 0.
    """

    def __init__(self, task_names: list[str], task_weights: list[float], *, eps: float = 1e-8):
        super().__init__(task_names, task_weights)
        if not eps > 0:
            raise ConfigError(f"weighting.eps must be > 0 (got {eps})")
        self.eps = float(eps)

    def weights(self, losses: Tensor) -> Tensor:
        return self.combine(losses.detach())[1]

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        L = losses.float().clamp_min(self.eps)
        a = self.task_weights if present is None else self.task_weights * present.float()
        a = a / a.sum()
        total = torch.exp((a * torch.log(L)).sum())
        return total, (total.detach() * a / L.detach())

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        total, w = self.combine(losses, ctx.present)
        ctx.backward(total)
        return w.detach()
