"""Regression of a scalar or a vector per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics.regression as tmr
from torch import Tensor
from torchmetrics import Metric

from ...registry import TASK_KINDS
from ..base import HIGHER, LOWER, Decoding, MetricDef, Task, TaskKind, masked_column_mean, masked_mean

LOSSES = {
    "mse": lambda p, t: F.mse_loss(p, t, reduction="none"),
    "l1": lambda p, t: F.l1_loss(p, t, reduction="none"),
    "huber": lambda p, t: F.huber_loss(p, t, reduction="none"),
    "smooth_l1": lambda p, t: F.smooth_l1_loss(p, t, reduction="none"),
}


class R2(Metric):
    """R² = 1 - SS_res / SS_tot per output dimension, averaged over the dimensions where it is
    defined; NaN where it is not: fewer than two samples, or a constant target (SS_tot = 0:
    torchmetrics gives 0 or 1 there). Sums in float64 (torchmetrics sums in float32, where
    sum(y²) - sum(y)²/n loses every digit for targets far from 0); a target is constant when its
    smallest and largest values are equal (exact)."""

    full_state_update = False
    higher_is_better = True
    n: Tensor
    total: Tensor
    total_sq: Tensor
    rss: Tensor
    lo: Tensor
    hi: Tensor

    def __init__(self) -> None:
        super().__init__()
        zero = torch.tensor(0.0, dtype=torch.float64)
        for name in ("n", "total", "total_sq", "rss"):
            self.add_state(name, default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("lo", default=torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("hi", default=torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, y = preds.double(), target.double()
        self.n = self.n + y.shape[0]
        self.total = self.total + y.sum(0)
        self.total_sq = self.total_sq + (y * y).sum(0)
        self.rss = self.rss + ((y - p) ** 2).sum(0)
        if y.shape[0]:
            self.lo = torch.minimum(self.lo, y.amin(0))
            self.hi = torch.maximum(self.hi, y.amax(0))

    def compute(self) -> Tensor:
        if float(self.n) < 2:
            return torch.tensor(float("nan"))
        tss = self.total_sq - self.total * self.total / self.n
        defined = (self.hi > self.lo) & (tss > 0)
        if not bool(defined.any()):
            return torch.tensor(float("nan"))
        r2 = 1.0 - self.rss / torch.where(defined, tss, torch.ones_like(tss))
        return r2[defined].mean().float() if r2.dim() else r2.float()


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
        "r2": MetricDef(lambda t: R2(), HIGHER),
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
        """Labelled samples' predictions and targets, in the target's own units: a target the
        source standardised (``task.spec.scaling``) is scored after undoing it on both, so MAE and
        RMSE are in the data's units (R² does not change)."""
        p = pred[mask].float().reshape(int(mask.sum()), -1)
        t = target[mask].float().reshape(p.shape[0], -1)
        scaling = task.spec.scaling
        if scaling:
            p, t = ((x.double() * scaling["std"] + scaling["mean"]).float() for x in (p, t))
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
