"""Regression of a scalar or a vector per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics.regression as tmr
from torch import Tensor

from ...registry import TASK_KINDS
from ..base import HIGHER, LOWER, MetricDef, Task, TaskKind, masked_column_mean, masked_mean

LOSSES = {
    "mse": lambda p, t: F.mse_loss(p, t, reduction="none"),
    "l1": lambda p, t: F.l1_loss(p, t, reduction="none"),
    "huber": lambda p, t: F.huber_loss(p, t, reduction="none"),
    "smooth_l1": lambda p, t: F.smooth_l1_loss(p, t, reduction="none"),
}


def _dim(task: Task) -> int:
    return int(math.prod(task.spec.shape)) if task.spec.shape else 1


@TASK_KINDS.register("regression")
class Regression(TaskKind):
    name = "regression"
    accepts = ("regression", "binary")
    losses = tuple(LOSSES)
    default_loss = "mse"
    metrics = {
        "mae": MetricDef(lambda t: tmr.MeanAbsoluteError(), LOWER),
        "rmse": MetricDef(lambda t: tmr.MeanSquaredError(squared=False), LOWER),
        # R² averaged over output dimensions for vector targets
        "r2": MetricDef(lambda t: tmr.R2Score(multioutput="uniform_average"), HIGHER),
    }
    default_metrics = ("mae", "rmse", "r2")
    default_primary = "mae"

    def out_features(self, task: Task) -> int:
        return _dim(task)

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pred = pred.float().reshape(pred.shape[0], -1)
        target = torch.nan_to_num(target.float().reshape(target.shape[0], -1))
        return masked_mean(LOSSES[task.loss_name](pred, target), mask)

    def fuse_key(self, task: Task) -> tuple | None:
        return (task.loss_name,) if _dim(task) == 1 else None  # scalar targets only

    def fused_loss(self, tasks, preds, targets, masks) -> Tensor:
        p = torch.cat([x.float().reshape(x.shape[0], 1) for x in preds], 1)  # [B, n]
        y = torch.nan_to_num(torch.stack([t.float().reshape(-1) for t in targets], 1))
        return masked_column_mean(LOSSES[tasks[0].loss_name](p, y), masks)

    def metric_inputs(self, task, pred, target, mask):
        p = pred[mask].float().reshape(int(mask.sum()), -1)
        t = target[mask].float().reshape(p.shape[0], -1)
        if p.shape[1] == 1:
            return p[:, 0], t[:, 0]
        return p, t
