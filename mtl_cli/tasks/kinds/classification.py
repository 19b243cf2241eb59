"""Multi-class classification: one label out of ``num_classes`` per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor

from ...registry import TASK_KINDS
from ..base import HIGHER, Decoding, MetricDef, Task, TaskKind, masked_column_mean, masked_mean


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
        "auroc": MetricDef(lambda t: tmc.MulticlassAUROC(t.num_classes), HIGHER),
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
