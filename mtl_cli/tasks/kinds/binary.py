"""Binary classification: one 0/1 label per sample, one logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from ...registry import TASK_KINDS
from ..base import HIGHER, THRESHOLD, Decoding, MetricDef, Task, TaskKind, masked_column_mean, masked_mean


class BinaryAUROC(tmc.BinaryAUROC):
    """torchmetrics' BinaryAUROC, but NaN (undefined) when the targets hold one class: AUROC ranks
    positives against negatives and needs both (torchmetrics returns 0 with a warning)."""

    def compute(self) -> Tensor:  # type: ignore[override]  # AUROC's compute gives one tensor
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or bool((target == target.reshape(-1)[0]).all()):
            return torch.tensor(float("nan"))
        return super().compute()


@TASK_KINDS.register("binary")
class Binary(TaskKind):
    name = "binary"
    accepts = ("binary",)
    losses = ("bce",)
    default_loss = "bce"
    metrics = {
        "accuracy": MetricDef(lambda t: tmc.BinaryAccuracy(), HIGHER),
        "f1": MetricDef(lambda t: tmc.BinaryF1Score(), HIGHER),
        "auroc": MetricDef(lambda t: BinaryAUROC(), HIGHER),
    }
    default_metrics = ("accuracy", "f1", "auroc")
    default_primary = "accuracy"

    def out_features(self, task: Task) -> int:
        return 1

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        target = torch.nan_to_num(target.float())
        pw = None if task.pos_weight is None else pred.new_tensor(task.pos_weight)
        raw = F.binary_cross_entropy_with_logits(pred.float().squeeze(-1), target, reduction="none", pos_weight=pw)
        return masked_mean(raw, mask)

    def metric_inputs(self, task, pred, target, mask):
        return pred[mask].float().squeeze(-1).sigmoid(), target[mask].long()

    def fuse_key(self, task: Task) -> tuple:
        return (task.loss_name,)

    def fused_loss(self, tasks, preds, targets, masks) -> Tensor:
        p = torch.cat([x.float().reshape(x.shape[0], 1) for x in preds], 1)  # [B, n]
        y = torch.nan_to_num(torch.stack([t.float() for t in targets], 1))
        pw = None
        if any(t.pos_weight is not None for t in tasks):
            pw = p.new_tensor([1.0 if t.pos_weight is None else t.pos_weight for t in tasks])
        raw = F.binary_cross_entropy_with_logits(p, y, reduction="none", pos_weight=pw)
        return masked_column_mean(raw, masks)

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """The probability of 1 and the 0/1 label at THRESHOLD."""
        probs = torch.sigmoid(pred.reshape(pred.shape[0])).tolist()
        return [{"label": int(p >= THRESHOLD), "prob": p} for p in probs]

    def summary(self, task: Task, record: dict) -> str:
        return f"{record['label']} ({record['prob']:.2f})"
