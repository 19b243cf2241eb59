"""GradNorm (Chen et al., ICML 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in
Deep Multitask Networks"): task weights w_t (init 1) scale the losses, ``total = sum_t w_t L_t``,
and are tuned so that the gradient norms ``G_t = ||grad_W (w_t L_t)|| = w_t ||grad_W L_t||`` on a
shared layer W follow the tasks' relative inverse training rates:

    L_grad = sum_t | G_t - mean(G) r_t^alpha |,   r_t = (L_t / L_t(0)) / mean_s (L_s / L_s(0)),

with ``mean(G) r_t^alpha`` held constant. ``dL_grad/dw_t = sign(G_t - target_t) ||grad_W L_t||``
(closed form); w is updated by its own rule (``optimizer``: Adam, as in FAMO and common GradNorm
code, or plain gradient descent; learning rate ``lr``) after each optimizer step, from the mean of
its micro-batch gradients, then clamped to >= 1e-4 and renormalised to ``sum_t w_t = T``. The
model's update of the step uses the weights before that update (the paper's Algorithm 1).
L_t(0) is the first loss seen for each task. W (``layer``): ``last``, the last shared parameter
tensor with two or more dimensions (the last shared layer's weight, the paper's choice); ``all``,
every shared parameter; ``rep``, the shared representation (as LibMTL's ``rep_grad``).
Absent tasks (``ctx.present`` 0) get weight 0 this step and keep their w.

State (weights, L(0), Adam moments, pending gradient) is in buffers. GradNorm is a loss weighting
that reads gradient norms: it subclasses :class:`Weighting` (not the engine: it aggregates nothing),
declares ``requires = {"losses", "grads"}`` and reuses the engine's :func:`jacobian`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..config.params import NonNeg, PosInt, Positive
from ..errors import Problem
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting, rows_present
from .engine import method_jacobian, shared_params

MIN_WEIGHT = 1e-4


def gradnorm_grad(w: Tensor, norms: Tensor, ratios: Tensor, alpha: float) -> Tensor:
    """Gradient of GradNorm's L_grad with respect to the weights ``w`` [n], from the gradient norms
    of the unweighted losses ``norms`` [n] and the loss ratios ``L_t / L_t(0)`` [n]."""
    G = w * norms
    r = ratios / ratios.mean().clamp_min(1e-12)
    target = G.mean() * r.pow(alpha)
    return torch.sign(G - target) * norms


@WEIGHTINGS.register("gradnorm")
class GradNorm(Weighting):
    requires = frozenset({"losses", "grads"})

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        alpha: NonNeg = 1.5,
        lr: Positive = 0.025,
        optimizer: Literal["adam", "sgd"] = "adam",
        layer: Literal["last", "all", "rep"] = "last",
        mode: Literal["loop", "batched"] = "loop",
        chunk_size: PosInt | None = None,
    ):
        super().__init__(task_names, task_weights)
        self.alpha, self.lr, self.optimizer, self.layer = float(alpha), float(lr), optimizer, layer
        self.mode, self.chunk_size = mode, chunk_size
        n = len(task_names)
        self.register_buffer("loss_weights", torch.ones(n))
        self.register_buffer("initial_losses", torch.full((n,), math.nan))
        self.register_buffer("pending", torch.zeros(n))  # summed micro-batch gradients of this step
        self.register_buffer("pending_count", torch.zeros(n))
        self.register_buffer("exp_avg", torch.zeros(n))
        self.register_buffer("exp_avg_sq", torch.zeros(n))
        self.register_buffer("adam_steps", torch.zeros(n))

    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        if node.get("layer", "last") == "rep" and not getattr(arch_cls, "shared_representation", False):
            return [
                Problem(
                    "weighting.layer",
                    "representation gradients need one representation shared by every "
                    "task, which this architecture does not have",
                    "rep",
                    "last",
                    "set weighting.layer=last (the last shared layer's weight)",
                )
            ]
        return []

    def _wrt(self, ctx: BackwardContext) -> list[Tensor]:
        if self.layer == "rep":
            return [ctx.rep]
        params = shared_params(ctx.model)
        if self.layer == "all":
            return params
        mats = [p for p in params if p.dim() >= 2]
        return [mats[-1] if mats else params[-1]]

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        n = losses.shape[0]
        p = torch.ones(n, device=losses.device) if ctx.present is None else ctx.present.float()
        rows = rows_present(ctx, n)
        L = losses.detach().float()
        first = torch.isnan(self.initial_losses) & (p > 0)
        self.initial_losses.copy_(torch.where(first, L, self.initial_losses))
        w = self.loss_weights.clone() * p
        if len(rows) > 1:
            J = method_jacobian(self, losses, self._wrt(ctx), rows).float()
            norms = self._global_norms(J, ctx)
            idx = torch.tensor(rows, device=losses.device)
            ratios = L[idx] / self.initial_losses[idx].clamp_min(1e-12)
            g = gradnorm_grad(self.loss_weights[idx], norms, ratios, self.alpha)
            ok = torch.isfinite(g).all()  # a non-finite step leaves the weights alone
            self.pending[idx] += torch.where(ok, g, torch.zeros_like(g))
            self.pending_count[idx] += ok.float()
        ctx.backward((w.to(losses.dtype) * losses).sum())
        return w

    def _global_norms(self, J: Tensor, ctx: BackwardContext) -> Tensor:
        """The task gradients' norms over the global batch: with several processes the parameter
        rows are averaged over them, the representation rows (other samples on each process)
        add their squared norms (divided by ``world^2``, the shares' scale)."""
        comm = ctx.comm
        if comm is None or not comm.active:
            return J.norm(dim=1)
        if self.layer == "rep":
            sq = comm.all_reduce((J * J).sum(dim=1), "sum", "gradient norms")
            return (sq / comm.world**2).sqrt()
        return comm.all_reduce(J, "avg", "task gradients").norm(dim=1)

    @torch.no_grad()
    def on_step_end(self, step: int) -> None:
        has = self.pending_count > 0
        g = self.pending / self.pending_count.clamp_min(1)
        if self.optimizer == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            self.exp_avg.copy_(torch.where(has, b1 * self.exp_avg + (1 - b1) * g, self.exp_avg))
            self.exp_avg_sq.copy_(torch.where(has, b2 * self.exp_avg_sq + (1 - b2) * g * g, self.exp_avg_sq))
            self.adam_steps.add_(has.float())
            t = self.adam_steps.clamp_min(1)
            step_ = self.exp_avg / (1 - b1**t) / ((self.exp_avg_sq / (1 - b2**t)).sqrt() + eps)
        else:
            step_ = g
        old = self.loss_weights
        new = torch.where(has, (old - self.lr * step_).clamp_min(MIN_WEIGHT), old)
        # renormalise the updated weights so that the sum of all weights stays T
        moved = (old * has).sum()
        new_sum = (new * has).sum()
        factor = torch.where(new_sum > 0, moved / new_sum.clamp_min(1e-12), torch.ones_like(new_sum))
        self.loss_weights.copy_(torch.where(has, new * factor, old))
        self.pending.zero_()
        self.pending_count.zero_()
