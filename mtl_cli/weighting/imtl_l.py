"""IMTL-L: the loss-balancing half of Impartial Multi-Task Learning (learned loss scales)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import WEIGHTINGS
from .base import LossTransform, present_mask


@WEIGHTINGS.register("imtl_l")
class IMTLL(LossTransform):
    r"""Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (IMTL-L, the loss part).

    One learnable scale :math:`s_t` per task (an ``nn.Parameter``, initialised to 0, trained by
    the main optimizer without weight decay)::

        total = sum_t  exp(s_t) * L_t - s_t           weights (logged) = exp(s_t)

    Minimising over ``s_t`` drives every scaled loss ``exp(s_t) L_t`` towards 1 (scale-impartial).
    Absent tasks (``ctx.present`` 0) contribute nothing, so their ``s_t`` gets a zero gradient;
    their logged weight is 0.
    """

    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__(task_names, task_weights)
        self.scales = nn.Parameter(torch.zeros(len(task_names)))

    def transform(self, losses: Tensor) -> Tensor:
        s = self.scales
        return torch.exp(s) * losses.float() - s

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        return torch.exp(self.scales.detach()) * present_mask(losses, present)
