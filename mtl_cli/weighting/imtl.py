"""IMTL (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"): the hybrid of IMTL-L and
IMTL-G, i.e. ``weighting=composed transform=imtl_l aggregator=imtl_g`` with the engine keys at the
top level. Learnable scales s_t (IMTL-L's, an ``nn.Parameter`` initialised to 0, trained by the main
optimizer without weight decay) turn the losses into ``L'_t = exp(s_t) L_t - s_t``; IMTL-G then
weights the gradients of the scaled losses on the shared parameters:

- shared parameters: ``sum_t alpha_t exp(s_t) grad L_t`` with ``alpha`` IMTL-G's weights of those rows;
- task-specific parameters: the gradient of their own ``L'_t``;
- s_t: the gradient of ``exp(s_t) L_t - s_t``, that is ``exp(s_t) L_t - 1`` (IMTL-L's objective).

The logged weights are the effective weights on the raw losses, ``alpha_t exp(s_t)``. Absent tasks
(``ctx.present`` 0) get no row, weight 0 and a zero gradient on their s_t.
"""

from __future__ import annotations

from torch import Tensor

from ..registry import WEIGHTINGS
from .base import BackwardContext
from .composed import backward_through
from .imtl_g import IMTLG
from .imtl_l import IMTLL


@WEIGHTINGS.register("imtl")
class IMTL(IMTLG):
    def __init__(self, task_names: list[str], task_weights: list[float], **engine):
        super().__init__(task_names, task_weights, **engine)
        self.transformer = IMTLL(task_names, [1.0] * len(task_names))

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        return backward_through(self.transformer, losses, ctx, super().weighted_backward)
