"""SI: the scale-invariant loss (sum of log losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting


@WEIGHTINGS.register("si")
class ScaleInvariant(Weighting):
    r"""Scale-invariant loss: the sum of the log task losses, invariant to any rescaling of a
    loss (its gradient is ``grad L_t / L_t``); the "SI" baseline of e.g. Navon et al., "Multi-Task
    Learning as a Bargaining Game" (Nash-MTL), ICML 2022, and Liu et al., FAMO, NeurIPS 2023::

        total = sum_t w_t * log(max(L_t, eps))       weights (logged) = w_t / L_t   (detached)

    The method has no weights of its own, so the static task weights ``w_t`` (1 by default)
    multiply the log losses. ``eps`` guards ``log(0)`` (the gradient of a clamped loss is 0).
    Absent tasks (``ctx.present`` 0) contribute nothing and get weight 0.
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
        total = (a * torch.log(L)).sum()
        return total, a / L.detach()

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        total, w = self.combine(losses, ctx.present)
        ctx.backward(total)
        return w.detach()
