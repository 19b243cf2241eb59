"""IMTL-L: the loss-balancing half of Impartial Multi-Task Learning (learned loss scales)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting


@WEIGHTINGS.register("imtl_l")
class IMTLL(Weighting):
    r"""Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (IMTL-L, the loss part).

    One learnable scale :math:`s_t` per task (an ``nn.Parameter``, initialised to 0, trained by
    the main optimizer without weight decay)::

        total = sum_t  exp(s_t) * L_t - s_t           weights (logged) = exp(s_t)

    Minimising over ``s_t`` drives every scaled loss ``exp(s_t) L_t`` towards 1 (scale-impartial).
    Static task weights are ignored (the method learns its own). Absent tasks (``ctx.present`` 0)
    contribute nothing, so their ``s_t`` gets a zero gradient; their logged weight is 0.
    """

    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__(task_names, task_weights)
        self.scales = nn.Parameter(torch.zeros(len(task_names)))

    def weights(self, losses: Tensor) -> Tensor:
        return torch.exp(self.scales.detach()).to(losses.dtype)

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.ones_like(self.scales) if present is None else present.to(self.scales.dtype)
        s = self.scales
        total = (p * (torch.exp(s) * losses.float() - s)).sum()
        return total, torch.exp(s.detach()) * p

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        total, w = self.combine(losses, ctx.present)
        ctx.backward(total)
        return w.detach()
