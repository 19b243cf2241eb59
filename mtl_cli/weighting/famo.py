"""FAMO: Fast Adaptive Multitask Optimization (loss-based, O(1) per step)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import NonNeg, Positive
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting, present_mask


@WEIGHTINGS.register("famo")
class FAMO(Weighting):
    r"""Liu, Liang, Chen, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
    (Algorithm 1).

    Task logits :math:`\xi` (a buffer, not a model parameter), ``z = softmax(xi)``. The model step
    descends::

        total = sum_t (z_t / c) * log(L_t + eps),      c = sum_t z_t / (L_t + eps)   (c detached)

    whose gradient is ``sum_t z_t / (c (L_t + eps)) grad L_t``. After the step the logits are
    updated from the change of the log losses, ``delta_t = log(L_t(before) + eps) - log(L_t(after) + eps)``::

        g  = J^T delta = z * (delta - <z, delta>)      (J: the softmax Jacobian d z / d xi)
        xi <- Adam(xi, grad = g + gamma * xi, lr=w_lr)  (Adam's L2 decay, as in the paper's code)

    so weight moves toward the tasks whose loss decreased less. Differences from the paper: (1)
    L(after) is not a second forward pass on the same batch but the losses of the NEXT optimizer
    step (the next calls' losses, i.e. a fresh batch with the updated parameters); the update is
    therefore made in ``on_step_end`` of the following step and only for tasks that were present in
    both steps (other tasks keep their logits and Adam moments). With gradient accumulation the
    losses of a step are the mean over its micro-batches. (2) The minimum losses ``L*`` of the
    paper's code are taken as 0. Adam uses betas (0.9, 0.999), eps 1e-8, per-task step counts.

    Returned (logged) weights are ``z`` renormalised over the tasks present this step (they sum to
    1; absent tasks 0); the gradient coefficient of task t is ``z_t / (c (L_t + eps))``. The
    log makes the update (nearly, up to ``eps``) invariant to a constant scale of a loss, so
    static task weights do not change the balance (validation warns). All state (logits, Adam moments, the
    previous step's losses, the current step's loss sums) lives in buffers.
    """

    betas = (0.9, 0.999)
    adam_eps = 1e-8

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        w_lr: Positive = 0.025,
        gamma: NonNeg = 0.001,
        eps: Positive = 1e-8,
    ):
        super().__init__(task_names, task_weights)
        self.w_lr, self.gamma, self.eps = float(w_lr), float(gamma), float(eps)
        n = len(task_names)
        for name in ("logits", "adam_m", "adam_v", "adam_t", "prev_loss", "prev_valid", "step_sum", "step_count"):
            self.register_buffer(name, torch.zeros(n))

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = torch.softmax(self.logits, 0)
        if present is not None:
            z = z * present.float()
            z = z / z.sum()
        D = losses.float().clamp_min(0) + self.eps
        c = (z / D.detach()).sum()
        total = (z / c * torch.log(D)).sum()
        return total, z

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True  # log losses: (nearly, up to eps) scale-free

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        z = super().weighted_backward(losses, ctx)
        p = present_mask(losses, ctx.present)
        self.step_sum += losses.detach().float() * p
        self.step_count += p
        return z

    def on_step_end(self, step: int) -> None:
        has = self.step_count > 0
        cur = self.step_sum / self.step_count.clamp_min(1)
        both = has & (self.prev_valid > 0)
        self._update_logits(self.prev_loss, cur, both)
        self.prev_loss.copy_(torch.where(has, cur, self.prev_loss))
        self.prev_valid.copy_(torch.where(has, torch.ones_like(self.prev_valid), self.prev_valid))
        self.step_sum.zero_()
        self.step_count.zero_()

    @torch.no_grad()
    def _update_logits(self, before: Tensor, after: Tensor, mask: Tensor) -> None:
        """One masked Adam step of the logits on ``J^T delta`` (tasks outside ``mask`` untouched)."""
        zero = torch.zeros_like(self.logits)
        delta = torch.where(mask, torch.log(before + self.eps) - torch.log(after + self.eps), zero)
        z = torch.softmax(self.logits, 0)
        g = z * (delta - (z * delta).sum()) + self.gamma * self.logits
        b1, b2 = self.betas
        t = self.adam_t + mask.float()
        m = torch.where(mask, b1 * self.adam_m + (1 - b1) * g, self.adam_m)
        v = torch.where(mask, b2 * self.adam_v + (1 - b2) * g * g, self.adam_v)
        m_hat = m / (1 - b1**t).clamp_min(1e-12)
        v_hat = v / (1 - b2**t).clamp_min(1e-12)
        step = torch.where(mask, self.w_lr * m_hat / (v_hat.sqrt() + self.adam_eps), zero)
        self.logits.sub_(step)
        self.adam_m.copy_(m)
        self.adam_v.copy_(v)
        self.adam_t.copy_(t)
