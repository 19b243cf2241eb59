"""SI: the scale-invariant loss (sum of log losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import Positive
from ..registry import WEIGHTINGS
from .base import LossTransform, present_mask


@WEIGHTINGS.register("si")
class ScaleInvariant(LossTransform):
    r"""Scale-invariant loss: the sum of the log task losses, invariant to any rescaling of a
    loss (its gradient is ``grad L_t / L_t``); the "SI" baseline of e.g. Navon et al., "Multi-Task
    Learning as a Bargaining Game" (Nash-MTL), ICML 2022, and Liu et al., FAMO, NeurIPS 2023::

        total = sum_t log(max(L_t, eps))       weights (logged) = 1 / L_t   (detached)

    ``eps`` guards ``log(0)`` (the gradient of a clamped loss is 0). Absent tasks (``ctx.present``
    0) contribute nothing and get weight 0. Being scale-invariant, it ignores static task weights
    (validation warns when they are set).
    """

    def __init__(self, task_names: list[str], task_weights: list[float], *, eps: Positive = 1e-8):
        super().__init__(task_names, task_weights)
        self.eps = float(eps)

    def transform(self, losses: Tensor) -> Tensor:
        return torch.log(losses.float().clamp_min(self.eps))

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        return present_mask(losses, present) / losses.float().clamp_min(self.eps)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
