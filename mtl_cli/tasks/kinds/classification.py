"""Multi-class classification: one label out of ``num_classes`` per sample."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from ...registry import TASK_KINDS
from ..base import HIGHER, Decoding, MetricDef, Task, TaskKind, masked_column_mean, masked_mean


def mean_over_defined(per_class: Tensor, defined: Tensor) -> Tensor:
    """The mean of the per-class values where ``defined`` (bool), NaN when none is."""
    return per_class[defined].float().mean() if bool(defined.any()) else torch.tensor(float("nan"))


class MulticlassAUROC(tmc.MulticlassAUROC):
    """Macro one-vs-rest AUROC over the classes that the targets hold (each needs positives and
    negatives); NaN when none does. torchmetrics counts an absent class as 0 in the mean."""

    def __init__(self, num_classes: int):
        super().__init__(num_classes, average="none")

    def compute(self) -> Tensor:  # type: ignore[override]  # AUROC's compute gives one tensor
        target = dim_zero_cat(self.target).long().reshape(-1)
        counts = torch.bincount(target, minlength=self.num_classes)[: self.num_classes]
        defined = (counts > 0) & (counts < target.numel())
        if not bool(defined.any()):
            return torch.tensor(float("nan"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no positive samples" of the absent classes
            return mean_over_defined(super().compute(), defined)


@TASK_KINDS.register("classification")
class Classification(TaskKind):
    name = "classification"
    accepts = ("classification",)
    needs_num_classes = True
    losses = ("cross_entropy",)
    default_loss = "cross_entropy"
    metrics = {
        "accuracy": MetricDef(lambda t: tmc.MulticlassAccuracy(t.num_classes, average="micro"), HIGHER),
        "f1": MetricDef(lambda t: tmc.MulticlassF1Score(t.num_classes, average="macro"), HIGHER),
        "auroc": MetricDef(lambda t: MulticlassAUROC(t.num_classes), HIGHER),
    }
    default_metrics = ("accuracy", "f1")
    default_primary = "accuracy"

    def out_features(self, task: Task) -> int:
        return task.num_classes

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        # filler labels of unlabelled samples may be anything: clamp them into range
        safe = target.clamp(0, task.num_classes - 1)
        return masked_mean(F.cross_entropy(pred.float(), safe, reduction="none"), mask)

    def metric_inputs(self, task, pred, target, mask):
        return pred[mask].float().softmax(-1), target[mask]

    def fuse_key(self, task: Task) -> tuple:
        return (task.num_classes,)

    def fused_loss(self, tasks, preds, targets, masks) -> Tensor:
        p = torch.stack([x.float() for x in preds], 2)  # [B, C, n]
        y = torch.stack(targets, 1).clamp(0, tasks[0].num_classes - 1)  # [B, n]
        return masked_column_mean(F.cross_entropy(p, y, reduction="none"), masks)

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """The class name (label map, else the data's names, else the index), its index, and the
        probability of every class."""
        names = out.class_names(task)
        probs = torch.softmax(pred.reshape(pred.shape[0], -1), dim=1)
        idx = probs.argmax(dim=1).tolist()
        return [{"label": names[i], "index": i, "probs": dict(zip(names, p))} for i, p in zip(idx, probs.tolist())]

    def summary(self, task: Task, record: dict) -> str:
        return f"{record['label']} ({max(record['probs'].values()):.2f})"
