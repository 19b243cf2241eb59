"""The weighting interface: how per-task losses (and their gradients) become one update.

The trainer calls ``weighting.backward(losses, ctx)`` once per micro-batch with the stacked task
losses [T] (task order = ``task_names``; a task whose dataset is not in the step has an exact 0
without a graph and ``ctx.present`` 0). ``backward`` is the same for every method:

1. the losses are multiplied by the static task weights (``tasks.<name>.weight``, 1 by default):
   the one meaning of a task weight is a fixed pre-scale of the task's loss, which every method
   then works on (a method that is invariant to such a scale says so with
   :meth:`Weighting.ignores_task_weights`, and validation warns);
2. the method's :meth:`Weighting.weighted_backward` back-propagates its update;
3. the weights it returns are multiplied by the task weights again, so what is logged is always
   the effective weight on the raw task losses.

The contracts a method implements, from the least to the most it needs:

- ``weights(losses, present) -> [T]``: weights from the detached losses (EW, DWA, RLW...); the
  default ``combine`` forms ``sum_t w_t L_t``;
- ``combine(losses, present) -> (total, weights)``: any scalarisation of the losses with a graph
  (UW, GLS, FAMO...); the default ``weighted_backward`` calls ``ctx.backward(total)``;
- :class:`LossTransform`: a scalarisation that is a sum of per-task transformed losses
  (``transform(losses) -> [T]``: SI's log, UW, IMTL-L), which ``weighting=composed`` puts in
  front of any gradient method;
- ``weighted_backward(losses, ctx)``: full control (the gradient engine,
  :class:`mtl_cli.weighting.engine.GradientWeighting`, whose methods implement only
  ``gramian_weights(M, rows)`` or ``aggregate(G, rows)``).

Methods keep all their state in module buffers/parameters so that ``state_dict()`` holds it.
Generic code never checks a method's name: it reads the class attributes and classmethods below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn


@dataclass(kw_only=True)
class BackwardContext:
    """What a method may use besides the losses, for one micro-batch."""

    model: nn.Module
    #: backward(total, inputs=None): scales for AMP / accumulation, then calls .backward() (into
    #: ``inputs`` only, when given)
    backward: Callable[..., None]
    step: int
    #: [T] 1.0 for tasks with a batch this step, 0.0 for tasks of datasets not drawn (their loss is
    #: an exact 0 without a graph); None when every task is present
    present: Tensor | None = None
    rep: Any = None  # model.encode(inputs) of this step (what the heads read)
    grad_scale: float = 1.0  # what ``backward`` multiplies gradients by (AMP scale / accumulation)
    skip_step: Callable[[str], None] | None = None  # skip the coming optimizer step, saying why
    #: skip_if(cond, why, labels=None): skip the coming step where the bool tensor ``cond`` is set
    #: (0-d, or one entry per label, which the reason names), without reading it when the trainer
    #: can decide on the device (returns None; the step is then masked and the skip logged later),
    #: else after reading it (returns whether the step is skipped)
    skip_if: Callable[..., bool | None] | None = None
    #: the indices of the tasks with a batch this step (``present`` on the host); None: read it
    present_rows: list[int] | None = None
    amp_scale: float = 1.0  # the GradScaler's scale (fp16), part of grad_scale
    #: with several processes (data parallel): ``mtl_cli.train.distributed.Comm``, whose
    #: ``all_reduce`` a method uses for what it reads beyond the losses (task gradients, their
    #: Gramian) and ``mark_synced`` for gradients it made equal everywhere; None in one process.
    #: The losses a method gets are already the global batch's (value) with this process's share
    #: (gradient), so loss-based methods need nothing else.
    comm: Any = None


def present_mask(losses: Tensor, present: Tensor | None) -> Tensor:
    """``present`` as a float mask on ``losses``' device (all ones when None)."""
    if present is None:
        return torch.ones(losses.shape[0], device=losses.device)
    return present.float()


def rows_present(ctx: BackwardContext, n: int) -> list[int]:
    """The indices of the tasks present this micro-batch (of ``n``), from the host copy the
    trainer gives (``ctx.present_rows``); without it, by reading ``ctx.present``."""
    if ctx.present_rows is not None:
        return list(ctx.present_rows)
    if ctx.present is None:
        return list(range(n))
    return [i for i, v in enumerate(ctx.present.tolist()) if v > 0]


class Weighting(nn.Module):
    #: what the method needs from the trainer: "losses" (all), "grads" (task gradients)
    requires: frozenset[str] = frozenset({"losses"})
    task_weights: Tensor  # [T] buffer: the static task weights (the losses' pre-scale)

    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__()
        self.task_names = list(task_names)
        self.register_buffer("task_weights", torch.tensor(task_weights, dtype=torch.float32))
        self._prescaled = any(float(w) != 1.0 for w in task_weights)

    # ------------------------------------------------------------------ what the trainer calls
    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        """Pre-scale the losses by the task weights, back-propagate the method's update, return the
        effective weights [T] on the raw losses (NaN where the method has none)."""
        if not self._prescaled:
            return self.weighted_backward(losses, ctx)
        scale = self.task_weights.to(device=losses.device)
        w = self.weighted_backward(losses * scale.to(losses.dtype), ctx)
        return w * scale.to(w.dtype)

    def on_step_end(self, step: int) -> None:
        """Hook after each optimizer step (no-op by default)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Hook after each epoch (no-op by default)."""

    # ------------------------------------------------------------------ what a method implements
    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        """Back-propagate this method's update for the (pre-scaled) ``losses``; return the weights."""
        total, w = self.combine(losses, ctx.present)
        ctx.backward(total)
        return w.detach()

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(total, weights [T])``: the scalarised loss (with a graph) and its weights."""
        w = self.weights(losses.detach(), present)
        return (w.to(losses.dtype) * losses).sum(), w

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        """Weights [T] for the detached losses [T] (``present``: the step's presence mask); by
        default those of :meth:`combine`, for a method that implements that instead."""
        if type(self).combine is Weighting.combine:
            raise NotImplementedError(f"{type(self).__name__} implements neither weights nor combine")
        return self.combine(losses.detach(), present)[1].detach()

    # ------------------------------------------------------------------ what validation asks
    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        """Problems (``mtl_cli.errors.Problem``) of this config node given the architecture class
        and the enabled tasks (e.g. representation gradients on a model without one shared
        representation, a per-task list of the wrong length). Single keys are checked from their
        annotations before this is called."""
        return []

    def model_problems(self, model: nn.Module, name: str) -> list:
        """Problems (``mtl_cli.errors.Problem``) of this method (``weighting=<name>``) on the built
        ``model``; none for methods that read only the losses."""
        return []

    def data_parallel_problems(self) -> list:
        """Problems (``mtl_cli.errors.Problem``) of this method with several processes; none for
        methods that read only the losses (they get the global batch's losses)."""
        return []

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        """True when the update's direction does not depend on a constant scale of one task's loss
        (so ``tasks.<name>.weight`` has no effect on the balance; validation warns)."""
        return False


class LossTransform(Weighting):
    """A scalarisation that is the sum of per-task transformed losses, ``total = sum_t f_t(L_t)``
    over the present tasks. Subclasses implement :meth:`transform` (with a graph through any
    learned parameters) and :meth:`weights` (``d f_t / d L_t``, detached: the logged weights).
    ``weighting=composed`` applies a transform before a gradient method."""

    def transform(self, losses: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, losses: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = present_mask(losses, present)
        total = (p * self.transform(losses)).sum()
        return total, self.weights(losses.detach(), present)
