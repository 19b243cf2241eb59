"""The weighting interface: how per-task losses (and later their gradients) become one update.

The trainer calls ``weighting.backward(losses, ctx)`` once per micro-batch with the stacked task
losses [T] (task order = ``task_names``). The default implementation forms the scalarised loss
``combine(losses)`` and calls ``ctx.backward(total)`` (which applies AMP loss scaling and the
gradient-accumulation divisor). Loss-based methods override ``weights``/``combine``; gradient
methods (a later issue) override ``backward`` and use ``ctx.model``'s ``encode``/``decode`` split
or ``shared_parameters``. Methods keep all their state in module buffers/parameters so that
``state_dict()`` holds it, and the returned weights [T] are what gets logged.

Generic code never checks a method's name: it reads the class attributes below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn


@dataclass
class BackwardContext:
    model: nn.Module
    # backward(total, inputs=None): scales for AMP / accumulation, then calls .backward() (into
    # ``inputs`` only, when given)
    backward: Callable[..., None]
    step: int
    # [T] 1.0 for tasks with a batch this step, 0.0 for tasks of datasets not drawn (their loss is
    # an exact 0 without a graph); None when every task is present
    present: Tensor | None = None
    rep: Any = None  # model.encode(inputs) of this step (what the heads read)
    grad_scale: float = 1.0  # what ``backward`` multiplies gradients by (AMP scale / accumulation)
    skip_step: Callable[[str], None] | None = None  # skip the coming optimizer step, saying why
    amp_scale: float = 1.0  # the GradScaler's scale (fp16), part of grad_scale


class Weighting(nn.Module):
    #: what the method needs from the trainer: "losses" (default), later "grads", "rep_grads"
    requires: frozenset[str] = frozenset({"losses"})

    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__()
        self.task_names = list(task_names)
        self.register_buffer("task_weights", torch.tensor(task_weights, dtype=torch.float32))

    def weights(self, losses: Tensor) -> Tensor:
        """Weights [T] for the detached losses [T]."""
        raise NotImplementedError

    def combine(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        w = self.weights(losses.detach())
        return (w * losses).sum(), w

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        total, w = self.combine(losses)
        ctx.backward(total)
        return w.detach()

    @classmethod
    def check(cls, node: dict, arch_cls: type) -> list:
        """Problems (``mtl_cli.errors.Problem``) with this config node given the architecture
        class (e.g. representation gradients on a model without one shared representation)."""
        return []

    def on_step_end(self, step: int) -> None:
        """Hook after each optimizer step (no-op by default)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Hook after each epoch (no-op by default)."""
