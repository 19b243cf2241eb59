"""Regression of a scalar or a vector per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics.regression as tmr
from torch import Tensor

from ...registry import TASK_KINDS
from ..base import HIGHER, LOWER, Decoding, MetricDef, Task, TaskKind, masked_column_mean, masked_mean

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

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """The value (a list for vector targets), mapped back to the target's units when the
        source recorded a scaling ``target_scaling: {target: {mean, std}}`` in its artifacts."""
        values = pred.reshape(pred.shape[0], -1)
        scaling = out.artifact("target_scaling", task)
        if scaling:  # the source trained on (y - mean) / std: back to the target's units
            std, mean = (torch.as_tensor(scaling[k], dtype=values.dtype).reshape(1, -1) for k in ("std", "mean"))
            values = values * std + mean
        return [{"value": r[0] if len(r) == 1 and not task.spec.shape else r} for r in values.tolist()]

    def summary(self, task: Task, record: dict) -> str:
        v = record["value"]
        return ", ".join(f"{x:.4g}" for x in v) if isinstance(v, list) else f"{v:.4g}"
