"""Task kinds and tasks.

A *task kind* (one file in ``mtl_cli/tasks/kinds/``) knows how a kind of target is predicted and
judged: the output size of its head, whether the head is dense (per pixel), its losses and its
metrics, each metric with a direction (higher or lower is better), whether it needs a number of
classes, and how ``mtl-predict`` turns its outputs into prediction records. A *task* is a named
use of a kind on one target of the data, built from a ``tasks.<name>`` config node. See
:class:`TaskKind` for the whole contract: code outside a kind's file never checks a kind's name.

Losses are masked means: a sample without a label (mask False) adds nothing, and a batch with no
label at all for a task gives a loss of exactly 0 that still has a graph (so backward works and
the other tasks train). No host synchronisation happens in a loss (no ``.item()``, no boolean
indexing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from ..data.base import PRIMARY, TargetSpec

HIGHER, LOWER = "higher", "lower"
THRESHOLD = 0.5  # probability at which a binary decision (binary, multilabel) becomes 1


@dataclass(frozen=True)
class MetricDef:
    factory: Callable[[Task], Any]  # returns a torchmetrics.Metric for this task
    direction: str  # HIGHER or LOWER is better

    @property
    def optimum(self) -> float:
        """Value of a perfect prediction: 1 for scores (accuracy, F1, AUROC, IoU, R²), 0 for errors."""
        return 1.0 if self.direction == HIGHER else 0.0


class TaskKind:
    """A kind of task; each kind is one file in ``mtl_cli/tasks/kinds/`` that registers its
    subclass with ``@TASK_KINDS.register("<name>")``, plus a preset ``conf/task/<name>.yaml``.
    Nothing else names a kind: validation, model building, training and ``mtl-predict`` read the
    contract below, so a new kind needs no change anywhere else.

    Class attributes:

    - ``name``: the registered name (``tasks.<task>.kind``);
    - ``accepts``: the target kinds (``TargetSpec.kind``) a task of this kind can learn;
    - ``dense``: the head predicts per pixel ([B, C, H, W]) instead of a vector ([B, C]);
    - ``default_head``: the head a task of this kind is meant for (informative);
    - ``needs_num_classes``: ``out_features`` (and the metrics) read ``task.num_classes``, so
      validation requires it from the data's target or from ``tasks.<task>.num_classes``;
    - ``losses`` / ``default_loss``: loss names ``loss`` takes for ``task.loss_name``;
    - ``metrics`` (name -> :class:`MetricDef`) / ``default_metrics`` / ``default_primary``.

    Methods (``task`` is the :class:`Task` being computed):

    - ``out_features(task)``: the head's output size C;
    - ``loss(task, pred, target, mask)``: the masked mean loss (see the module docstring);
    - ``metric_inputs(task, pred, target, mask)``: (preds, target) of the labelled samples, in
      the form the kind's torchmetrics take;
    - ``fuse_key`` / ``fused_loss`` (optional): several tasks' losses in one batched call;
    - ``decode(task, pred, out)``: one JSON-serialisable record per sample of ``pred`` for
      ``mtl-predict`` (nested dicts and lists become ``<task>.a.b`` / ``<task>.a.0`` CSV
      columns); files it writes (masks, maps) go through ``out`` (a :class:`Decoding`);
    - ``summary(task, record)``: a short text of one record, for mtl-predict's preview table.

    ``tests/test_tasks.py`` checks every registered kind against this contract (losses, metrics,
    fusing, ``needs_num_classes``, decoding), so a new kind is tested without editing a list.
    """

    name: str = ""
    dense: bool = False  # per-pixel prediction
    default_head: str = "linear"
    needs_num_classes: bool = False  # validation requires task.num_classes (data or config)
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

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """One prediction record per sample of ``pred`` [B, ...] (detached, float32, on the CPU).
        By default the raw outputs, flattened: ``{"output": [...]}``."""
        return [{"output": r} for r in pred.reshape(pred.shape[0], -1).tolist()]

    def summary(self, task: Task, record: dict) -> str:
        """A few characters saying what ``record`` (one of ``decode``'s) predicts."""
        return "..."


class ImageWriter(Protocol):
    def write(self, array: Any, stem: str, name: str, size: tuple[int, int] | None, mode: str) -> str:
        """Writes ``array`` [H, W] as the PNG ``<stem>_<name>.png`` (PIL ``mode``: ``L`` 8-bit,
        ``I;16`` 16-bit), resized (nearest) to ``size`` (width, height) if given; its path."""
        ...


@dataclass
class Decoding:
    """What :meth:`TaskKind.decode` gets besides the predictions: the run's data artifacts and,
    per sample of the batch, where its input came from."""

    artifacts: dict  # the run's data artifacts (label_maps, target_scaling, ...), by target name
    stems: list[str]  # per sample: a file-name-safe stem of its input (names files written for it)
    sizes: list | None  # per sample: the input image's own (width, height) or None (keep the size)
    images: ImageWriter
    warnings: dict[str, int] = field(default_factory=dict)  # what -> count, warned about when > 0

    def artifact(self, key: str, task: Task) -> Any:
        """The artifact ``key`` (e.g. ``label_maps``) recorded for ``task``'s target, or None."""
        return (self.artifacts.get(key) or {}).get(task.own_target)

    def class_names(self, task: Task) -> list[str]:
        """Names of a task's classes: the run's recorded label map, the data's names, or indices."""
        n = task.num_classes or task.spec.num_classes or 0
        mapping = self.artifact("label_maps", task)
        if isinstance(mapping, dict) and sorted(mapping.values()) == list(range(len(mapping))) and len(mapping) == n:
            return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
        names = task.spec.class_names
        if names and len(names) == n:
            return list(names)
        return [str(i) for i in range(n)]

    def write_image(self, array: Any, i: int, name: str, mode: str) -> str:
        """Sample ``i``'s PNG ``<stem>_<name>.png`` of ``array`` [H, W], at its input's own size."""
        return self.images.write(array, self.stems[i], name, self.sizes[i] if self.sizes else None, mode)

    def count(self, what: str, n: int) -> None:
        """Adds ``n`` to a count that mtl-predict reports as ``warning: <count> <what>`` if > 0."""
        self.warnings[what] = self.warnings.get(what, 0) + n


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

    @property
    def own_target(self) -> str:
        """The target's name in its own dataset (``<dataset>/`` removed)."""
        return self.target.split("/", 1)[1] if self.dataset != PRIMARY and "/" in self.target else self.target

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return self.kind.loss(self, pred, target, mask)

    def decode(self, pred: Tensor, out: Decoding) -> list[dict]:
        """One prediction record per sample of ``pred`` [B, ...] (see :meth:`TaskKind.decode`)."""
        return self.kind.decode(self, pred.detach().float().cpu(), out)

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
