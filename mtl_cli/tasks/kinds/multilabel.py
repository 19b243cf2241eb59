"""Multi-label classification: ``num_classes`` independent 0/1 labels per sample."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from ...registry import TASK_KINDS
from ..base import HIGHER, THRESHOLD, Decoding, MetricDef, Task, TaskKind, masked_mean
from .classification import mean_over_defined


class MultilabelAUROC(tmc.MultilabelAUROC):
    """Macro AUROC over the labels that the targets hold both as 0 and 1; NaN when none does
    (torchmetrics counts such a label as 0 in the mean)."""

    def __init__(self, num_labels: int):
        super().__init__(num_labels, average="none")

    def compute(self) -> Tensor:  # type: ignore[override]  # AUROC's compute gives one tensor
        target = dim_zero_cat(self.target).reshape(-1, self.num_labels)
        defined = (target == 1).any(0) & (target == 0).any(0)
        if not bool(defined.any()):
            return torch.tensor(float("nan"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return mean_over_defined(super().compute(), defined)


@TASK_KINDS.register("multilabel")
class Multilabel(TaskKind):
    name = "multilabel"
    accepts = ("multilabel",)
    needs_num_classes = True
    losses = ("bce",)
    default_loss = "bce"
    metrics = {
        # accuracy averaged over labels (each label a binary decision at 0.5)
        "accuracy": MetricDef(lambda t: tmc.MultilabelAccuracy(t.num_classes, average="micro"), HIGHER),
        "f1": MetricDef(lambda t: tmc.MultilabelF1Score(t.num_classes, average="macro"), HIGHER),
        "auroc": MetricDef(lambda t: MultilabelAUROC(t.num_classes), HIGHER),
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

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """Per label (named as classification names classes): 0/1 at THRESHOLD and the probability."""
        names = out.class_names(task)
        probs = torch.sigmoid(pred.reshape(pred.shape[0], -1)).tolist()
        return [
            {"labels": {n: int(v >= THRESHOLD) for n, v in zip(names, p)}, "probs": dict(zip(names, p))} for p in probs
        ]

    def summary(self, task: Task, record: dict) -> str:
        return ",".join(n for n, v in record["labels"].items() if v) or "-"
