"""IMTL (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"): the hybrid of IMTL-L and
IMTL-G. Learnable scales s_t (an ``nn.Parameter``, initialised to 0, trained by the main optimizer
without weight decay) turn the losses into ``L'_t = exp(s_t) L_t`` (IMTL-L); IMTL-G then weights
the gradients of the scaled losses on the shared parameters:

- shared parameters: ``sum_t alpha_t grad L'_t`` with ``alpha = imtl_g_weights(G' G'^T)``, ``G'`` the
  rows ``exp(s_t) g_t`` (see :mod:`.imtl_g`);
- task-specific parameters: the gradient of their own ``L'_t``;
- s_t: the gradient of ``exp(s_t) L_t - s_t``, that is ``exp(s_t) L_t - 1`` (IMTL-L's objective).

The logged weights are the effective weights on the raw losses, ``alpha_t exp(s_t)``.
Absent tasks (``ctx.present`` 0) get no row, weight 0 and a zero gradient on their s_t.

Implementation: the engine runs on the scaled losses (``exp(s)`` detached, so the Jacobian is
``diag(exp(s)) G`` and the heads get ``grad L'_t``); the scales' gradient, exact in closed form, is
added to ``scales.grad`` (times the AMP / accumulation factor, like every engine gradient). An
engine hook ``transform_losses(losses, ctx) -> (losses_for_the_jacobian, extra_loss)`` would make
this a plain ``aggregate`` method.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import WEIGHTINGS
from .base import BackwardContext
from .imtl_g import IMTLG


@WEIGHTINGS.register("imtl")
class IMTL(IMTLG):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        source: str = "params",
        grouping: str = "whole",
        every: int = 1,
        mode: str = "loop",
        chunk_size: int | None = None,
    ):
        super().__init__(
            task_names, task_weights, source=source, grouping=grouping, every=every, mode=mode, chunk_size=chunk_size
        )
        self.scales = nn.Parameter(torch.zeros(len(task_names)))

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        p = torch.ones_like(self.scales) if ctx.present is None else ctx.present.to(self.scales.dtype)
        e = torch.exp(self.scales.detach())
        scaled = e.to(losses.dtype) * losses
        w = super().backward(scaled, ctx)  # weights on the scaled rows (NaN when the step is skipped)
        ds = p * (e * losses.detach().float() - 1.0) * ctx.grad_scale  # d/ds (exp(s) L - s)
        self.scales.grad = ds.clone() if self.scales.grad is None else self.scales.grad.add_(ds)
        return w * e.to(w.dtype) * p.to(w.dtype)
