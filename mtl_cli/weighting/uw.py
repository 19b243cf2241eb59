"""Uncertainty weighting (UW): learned homoscedastic-uncertainty loss scales."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import WEIGHTINGS
from .base import LossTransform, present_mask


@WEIGHTINGS.register("uw")
class UncertaintyWeighting(LossTransform):
    r"""Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018.

    One learnable log-variance :math:`s_t = \log\sigma_t^2` per task (an ``nn.Parameter``,
    initialised to 0, trained by the main optimizer in its own parameter group without weight
    decay)::

        total = sum_t  exp(-s_t) * L_t + s_t          weights (logged) = exp(-s_t)

    The paper's regression form is ``0.5 exp(-s) L + 0.5 s`` and its classification form
    ``exp(-s) L + 0.5 s``; we use the common form without the 0.5 factors (as in LibMTL-style
    implementations up to a constant factor 2 of the regression form), which has the same
    minimiser ``s_t = log L_t`` and treats every task kind alike.

    Tasks absent from the step (``ctx.present`` 0) contribute neither loss nor regulariser, so
    their ``s_t`` receives a zero gradient; their logged weight is 0.
    """

    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__(task_names, task_weights)
        self.log_vars = nn.Parameter(torch.zeros(len(task_names)))

    def transform(self, losses: Tensor) -> Tensor:
        s = self.log_vars
        return torch.exp(-s) * losses.float() + s

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        return torch.exp(-self.log_vars.detach()) * present_mask(losses, present)
