"""Multi-label classification: ``num_classes`` independent 0/1 labels per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor

from ...registry import TASK_KINDS
from ..base import HIGHER, MetricDef, Task, TaskKind, masked_mean


@TASK_KINDS.register("multilabel")
class Multilabel(TaskKind):
    name = "multilabel"
    accepts = ("multilabel",)
    losses = ("bce",)
    default_loss = "bce"
    metrics = {
        # accuracy averaged over labels (each label a binary decision at 0.5)
        "accuracy": MetricDef(lambda t: tmc.MultilabelAccuracy(t.num_classes, average="micro"), HIGHER),
        "f1": MetricDef(lambda t: tmc.MultilabelF1Score(t.num_classes, average="macro"), HIGHER),
        "auroc": MetricDef(lambda t: tmc.MultilabelAUROC(t.num_classes, average="macro"), HIGHER),
    }
    default_metrics = ("accuracy", "f1")
    default_primary = "f1"

    def out_features(self, task: Task) -> int:
        return task.num_classes

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        raw = F.binary_cross_entropy_with_logits(pred.float(), torch.nan_to_num(target.float()), reduction="none")
        return masked_mean(raw, mask)

    def metric_inputs(self, task, pred, target, mask):
        return pred[mask].float().sigmoid(), target[mask].long()
