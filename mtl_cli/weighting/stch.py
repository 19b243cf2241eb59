"""STCH: smooth Tchebycheff scalarisation of the task losses."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import NonNegInt, Positive
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting, present_mask


@WEIGHTINGS.register("stch")
class SmoothTchebycheff(Weighting):
    r"""Lin, Zhang, Yang, Zhang & Zhang, "Smooth Tchebycheff Scalarization for Multi-Objective
    Optimization", ICML 2024, following the paper's multi-task variant (its LibMTL code)::

        f_t   = log(L_t + eps)    (log_losses=true, the MTL variant)   or   L_t   (log_losses=false)
        total = mu * log sum_t exp((f_t - z_t) / mu)                   (a smooth max_t (f_t - z_t))
        weights (logged) = softmax_t((f_t - z_t) / mu)                 (d total / d f_t, detached)

    Reference point z: the MTL variant normalises each loss by its average over the last warm-up
    epoch (``log(L / Lbar)``, i.e. ``z_t = log Lbar_t``; with ``log_losses=false`` ``z_t = Lbar_t``).
    During the first ``warmup_epochs`` epochs the total is the warm-up objective of the paper's
    code, ``sum_t log(L_t + eps)`` (logged weights ``1 / (L_t + eps)``; with ``log_losses=false``
    the plain sum, weights 1), and the losses of the last warm-up epoch are averaged into the
    ``ideal`` buffer. ``warmup_epochs=0`` means ``z = 0`` from the start. The official code also
    multiplies the total by the number of tasks (a constant rescaling of the learning rate); we do
    not. The paper's preference vector is uniform in MTL; static task weights pre-scale the losses
    as for every method (with ``log_losses=true`` a constant scale only shifts ``f_t`` and its
    reference ``z_t`` after the warm-up, so they have no effect then).

    Absent tasks (``ctx.present`` 0) are left out of the log-sum-exp (weight 0) and add nothing
    to the warm-up average; a task with no data in the last warm-up epoch gets ``z_t = 0``.
    """

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        mu: Positive = 1.0,
        warmup_epochs: NonNegInt = 4,
        log_losses: bool = True,
        eps: Positive = 1e-20,
    ):
        super().__init__(task_names, task_weights)
        self.mu, self.warmup_epochs, self.log_losses, self.eps = float(mu), int(warmup_epochs), log_losses, eps
        n = len(task_names)
        self.register_buffer("ideal", torch.zeros(n))  # z_t (in the space of f_t)
        self.register_buffer("warmup_sum", torch.zeros(n))
        self.register_buffer("warmup_count", torch.zeros(n))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))
        self._epochs = 0  # host mirror of `epochs` (restored on load): no device sync per step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epochs = int(self.epochs)

    def _f(self, losses: Tensor) -> Tensor:
        return torch.log(losses.float() + self.eps) if self.log_losses else losses.float()

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = present_mask(losses, present)
        f = self._f(losses)
        if self._epochs < self.warmup_epochs:
            total = (p * f).sum()
            w = p / (losses.detach().float() + self.eps) if self.log_losses else p
            return total, w
        x = torch.where(p > 0, (f - self.ideal) / self.mu, torch.full_like(f, -torch.inf))
        total = self.mu * torch.logsumexp(x, 0)
        return total, torch.softmax(x.detach(), 0)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return node.get("log_losses", True)  # log losses: a scale is a shift

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        w = super().weighted_backward(losses, ctx)
        if self._epochs == self.warmup_epochs - 1:  # the last warm-up epoch: average for z
            p = present_mask(losses, ctx.present)
            self.warmup_sum += losses.detach().float() * p
            self.warmup_count += p
        return w

    def on_epoch_end(self, epoch: int) -> None:
        self.epochs += 1
        self._epochs += 1
        if self._epochs == self.warmup_epochs:
            seen = self.warmup_count > 0
            mean = self.warmup_sum / self.warmup_count.clamp_min(1)
            self.ideal.copy_(torch.where(seen, self._f(mean), torch.zeros_like(mean)))
