"""DWA: Dynamic Weight Average (weights from the rate of change of per-epoch average losses)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import Positive
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting, present_mask


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(Weighting):
    r"""Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.

    With :math:`\bar L_t(e)` the average training loss of task t over epoch e::

        r_t = L_t(e-1) / L_t(e-2)
        w_t = T * softmax_t(r_t / temp)                 (T = number of tasks present this step)

    and ``w_t = 1`` for the first two epochs (no loss history yet). The averages are accumulated
    on the device in buffers during the epoch (no host sync) and rolled into the two-epoch history
    in ``on_epoch_end``. A task absent
    from a step gets weight 0 and adds nothing to the epoch average; a task absent for a whole
    epoch keeps its history, and while it has fewer than two epochs of history its ``r_t`` is 1.
    """

    def __init__(self, task_names: list[str], task_weights: list[float], *, temp: Positive = 2.0):
        super().__init__(task_names, task_weights)
        self.temp = float(temp)
        n = len(task_names)
        self.register_buffer("epoch_sum", torch.zeros(n))
        self.register_buffer("epoch_count", torch.zeros(n))
        self.register_buffer("history", torch.ones(2, n))  # [0]: L(e-1), [1]: L(e-2)
        self.register_buffer("history_len", torch.zeros(n))  # epochs of history per task (<= 2)
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))
        self._epochs = 0  # host mirror of `epochs` (restored on load): no device sync per step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epochs = int(self.epochs)

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        present = present_mask(losses, present)
        if self._epochs < 2:
            return present.clone()
        r = torch.where(
            self.history_len >= 2, self.history[0] / self.history[1].clamp_min(1e-12), torch.ones_like(self.history[0])
        )
        x = torch.where(present > 0, r / self.temp, torch.full_like(r, -torch.inf))
        return present.sum() * torch.softmax(x, 0)

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        w = super().weighted_backward(losses, ctx)
        p = present_mask(losses, ctx.present)
        self.epoch_sum += losses.detach().float() * p
        self.epoch_count += p
        return w.detach()

    def on_epoch_end(self, epoch: int) -> None:
        seen = self.epoch_count > 0
        mean = self.epoch_sum / self.epoch_count.clamp_min(1)
        self.history.copy_(
            torch.stack([torch.where(seen, mean, self.history[0]), torch.where(seen, self.history[0], self.history[1])])
        )
        self.history_len.copy_(torch.where(seen, (self.history_len + 1).clamp_max(2), self.history_len))
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self.epochs += 1
        self._epochs += 1
