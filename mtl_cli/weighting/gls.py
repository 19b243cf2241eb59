"""GLS: the geometric loss strategy (geometric mean of the task losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import Positive
from ..registry import WEIGHTINGS
from .base import Weighting, present_mask


@WEIGHTINGS.register("gls")
class GeometricLossStrategy(Weighting):
    r"""Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
    Strategy for Multi-Task Learning", CVPR Workshops 2019.

    The total is the geometric mean of the losses of the tasks present this step, computed in
    log space for stability::

        total = (prod_t L_t)^(1/T) = exp(mean_t log L_t)
        weights (logged) = d total / d L_t = total / (T * L_t)      (detached)

    A constant scale of one loss only rescales the total, so static task weights do not change
    the balance between tasks (validation warns when they are set). ``log`` is taken of
    ``max(L_t, eps)`` so that an exact zero loss cannot give ``-inf``. Absent tasks
    (``ctx.present`` 0) are left out of the mean (T counts present tasks only) and get weight 0.
    """

    def __init__(self, task_names: list[str], task_weights: list[float], *, eps: Positive = 1e-8):
        super().__init__(task_names, task_weights)
        self.eps = float(eps)

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        L = losses.float().clamp_min(self.eps)
        a = present_mask(losses, present)
        a = a / a.sum()
        total = torch.exp((a * torch.log(L)).sum())
        return total, (total.detach() * a / L.detach())

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
