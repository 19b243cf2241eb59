"""Dense regression: a value per pixel (depth, surface height...); NaN pixels are not scored.

Metrics follow the depth-estimation convention: absolute error (mean |pred - gt|) and relative
error (mean |pred - gt| / |gt|), both over valid pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from ...registry import TASK_KINDS
from ..base import LOWER, Decoding, MetricDef, Task, TaskKind


class _PixelError(Metric):
    """Mean absolute (or relative) error over valid pixels (those with a finite target)."""

    full_state_update = False

    def __init__(self, relative: bool):
        super().__init__()
        self.relative = relative
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        valid = torch.isfinite(target)
        err = (preds - target).abs()
        if self.relative:
            err = err / target.abs().clamp_min(1e-6)
        self.total += err[valid].double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()


LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "huber": F.huber_loss}


@TASK_KINDS.register("dense_regression")
class DenseRegression(TaskKind):
    name = "dense_regression"
    dense = True
    default_head = "conv_decoder"
    accepts = ("dense_regression",)
    losses = tuple(LOSSES)
    default_loss = "l1"
    metrics = {
        "abs_err": MetricDef(lambda t: _PixelError(relative=False), LOWER),
        "rel_err": MetricDef(lambda t: _PixelError(relative=True), LOWER),
    }
    default_metrics = ("abs_err", "rel_err")
    default_primary = "abs_err"

    def out_features(self, task: Task) -> int:
        return task.spec.shape[0] if len(task.spec.shape) == 3 else 1

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        target = target.float().reshape(pred.shape)
        valid = torch.isfinite(target) & mask.reshape(-1, *([1] * (target.dim() - 1)))
        raw = LOSSES[task.loss_name](pred.float(), torch.nan_to_num(target), reduction="none")
        v = valid.to(raw.dtype)
        return (raw * v).sum() / v.sum().clamp_min(1.0)

    def metric_inputs(self, task, pred, target, mask):
        return pred[mask].float(), target[mask].float().reshape(pred[mask].shape)

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """A 16-bit PNG per sample and channel (value x 65535, clipped to [0, 1]: the scale
        image_manifest reads 16-bit maps with) at the input image's own size: ``{"map": <path>}``,
        or a list of paths (``<task>_<channel>``) for several channels. Clipped pixels are counted."""
        records = []
        maps = pred.reshape(pred.shape[0], -1, *pred.shape[-2:])
        for i in range(maps.shape[0]):
            files = []
            for c in range(maps.shape[1]):
                m = maps[i, c]
                out.count(
                    f"pixel value(s) of {task.name} outside [0, 1] were clipped in its 16-bit PNGs",
                    int(((m < 0) | (m > 1)).sum()),
                )
                arr = (m.clamp(0, 1) * 65535).round().numpy()
                files.append(out.write_image(arr, i, task.name if maps.shape[1] == 1 else f"{task.name}_{c}", "I;16"))
            records.append({"map": files[0] if len(files) == 1 else files})
        return records

    def summary(self, task: Task, record: dict) -> str:
        f = record["map"]
        return Path(f if isinstance(f, str) else f[0]).name
