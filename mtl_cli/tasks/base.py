"""Task kinds and tasks.

A *task kind* (one file in ``mtl_cli/tasks/kinds/``) knows how a kind of target is predicted and
judged: the output size of its head, whether the head is dense (per pixel), its losses and its
metrics, each metric with a direction (higher or lower is better). A *task* is a named use of a
kind on one target of the data, built from a ``tasks.<name>`` config node.

Losses are masked means: a sample without a label (mask False) adds nothing, and a batch with no
label at all for a task gives a loss of exactly 0 that still has a graph (so backward works and
the other tasks train). No host synchronisation happens in a loss (no ``.item()``, no boolean
indexing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..data.base import TargetSpec

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class MetricDef:
    factory: Callable[[Task], Any]  # returns a torchmetrics.Metric for this task
    direction: str  # HIGHER or LOWER is better

    @property
    def optimum(self) -> float:
        """Value of a perfect prediction: 1 for scores (accuracy, F1, AUROC, IoU, R²), 0 for errors."""
        return 1.0 if self.direction == HIGHER else 0.0


class TaskKind:
    """Interface of a task kind; subclasses are registered in TASK_KINDS."""

    name: str = ""
    dense: bool = False  # per-pixel prediction
    default_head: str = "linear"
    losses: tuple[str, ...] = ()
    default_loss: str = ""
    metrics: dict[str, MetricDef] = {}
    default_metrics: tuple[str, ...] = ()
    default_primary: str = ""
    # target kinds (TargetSpec.kind) this task kind can be trained on
    accepts: tuple[str, ...] = ()

    def out_features(self, task: Task) -> int:
        raise NotImplementedError

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def metric_inputs(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor):
        """(preds, target) restricted to labelled samples, in the form the metrics take."""
        raise NotImplementedError

    def fuse_key(self, task: Task) -> tuple | None:
        """Tasks of this kind with equal non-None keys can share one ``fused_loss`` call."""
        return None

    def fused_loss(self, tasks: list[Task], preds: list[Tensor], targets: list[Tensor], masks: list[Tensor]) -> Tensor:
        """Losses [n] of ``tasks``, equal to calling ``loss`` on each, in a few batched ops."""
        raise NotImplementedError


def masked_mean(per_sample: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``per_sample`` [B, ...] over samples whose mask [B] is True (0 when none)."""
    m = mask.to(per_sample.dtype)
    if per_sample.dim() > 1:
        per_sample = per_sample.flatten(1).mean(1)
    per_sample = torch.where(mask, per_sample, torch.zeros_like(per_sample))  # NaN filler safe
    return (per_sample * m).sum() / m.sum().clamp_min(1.0)


def masked_column_mean(raw: Tensor, masks: list[Tensor]) -> Tensor:
    """Per-column mean of ``raw`` [B, n] over the rows whose mask (one [B] mask per column) is set."""
    m = torch.stack(masks, 1).to(raw.dtype)
    raw = torch.where(m > 0, raw, torch.zeros_like(raw))
    return (raw * m).sum(0) / m.sum(0).clamp_min(1.0)


@dataclass
class Task:
    """A task as the trainer uses it (built from config by ``mtl_cli.build``)."""

    name: str
    kind: TaskKind
    input: str  # qualified input key (``<dataset>/<input>`` outside the primary dataset)
    target: str  # qualified target key
    spec: TargetSpec
    loss_name: str
    metric_names: list[str]
    primary_metric: str
    weight: float = 1.0
    role: str = "primary"  # primary | auxiliary
    head: dict = field(default_factory=dict)
    num_classes: int | None = None
    ignore_index: int | None = None
    pos_weight: float | None = None
    dataset: str = "data"

    @property
    def out_features(self) -> int:
        return self.kind.out_features(self)

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.kind.loss(self, pred, target, mask)

    def direction(self, metric: str) -> str:
        return self.kind.metrics[metric].direction

    def distance_to_optimum(self, metric: str, value: float) -> float:
        return abs(self.kind.metrics[metric].optimum - value)

    def make_metrics(self) -> dict[str, Any]:
        return {m: self.kind.metrics[m].factory(self) for m in self.metric_names}


class LossComputer:
    """Per-task losses [T] in task order. Tasks whose kind can fuse them (say 40 binary tasks of
    one dataset) are computed in one batched call per group instead of one small graph per task.
    A task whose target is not in the batch (another dataset fed this step) gets an exact 0
    without a graph; ``present(targets)`` says which tasks had a batch."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(tasks):
            key = t.kind.fuse_key(t)
            groups.setdefault((type(t.kind), key, t.dataset) if key is not None else (i,), []).append(i)
        self.groups = list(groups.values())
        order = [i for g in self.groups for i in g]
        self._inverse = None if order == sorted(order) else torch.tensor(order).argsort()

    def present(self, targets: dict[str, Tensor]) -> list[bool]:
        return [t.target in targets for t in self.tasks]

    def __call__(self, preds: dict[str, Tensor], targets: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        parts: list[Tensor | None] = []
        for g in self.groups:
            ts = [self.tasks[i] for i in g]
            if ts[0].target not in targets:
                parts.append(None)  # this group's dataset is not in the batch
            elif len(ts) == 1:
                t = ts[0]
                parts.append(t.loss(preds[t.name], targets[t.target], masks[t.target]).reshape(1))
            else:
                parts.append(
                    ts[0].kind.fused_loss(
                        ts, [preds[t.name] for t in ts], [targets[t.target] for t in ts], [masks[t.target] for t in ts]
                    )
                )
        if any(x is None for x in parts):
            ref = next(x for x in parts if x is not None)
            parts = [x if x is not None else ref.new_zeros(len(g)) for x, g in zip(parts, self.groups)]
        out = torch.cat(parts)
        if self._inverse is not None:
            if self._inverse.device != out.device:
                self._inverse = self._inverse.to(out.device)
            out = out.index_select(0, self._inverse)
        return out
