"""Semantic segmentation: a class per pixel; pixels equal to ``ignore_index`` are not scored."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchmetrics.classification as tmc
from torch import Tensor

from ...registry import TASK_KINDS
from ..base import HIGHER, Decoding, MetricDef, Task, TaskKind


def _ignore(task: Task) -> int:
    return 255 if task.ignore_index is None else task.ignore_index


@TASK_KINDS.register("segmentation")
class Segmentation(TaskKind):
    name = "segmentation"
    dense = True
    default_head = "conv_decoder"
    accepts = ("segmentation",)
    needs_num_classes = True
    losses = ("cross_entropy",)
    default_loss = "cross_entropy"
    metrics = {
        "miou": MetricDef(
            lambda t: tmc.MulticlassJaccardIndex(t.num_classes, average="macro", ignore_index=_ignore(t)),
            HIGHER,
        ),
        "pixel_accuracy": MetricDef(
            lambda t: tmc.MulticlassAccuracy(t.num_classes, average="micro", ignore_index=_ignore(t)),
            HIGHER,
        ),
    }
    default_metrics = ("miou", "pixel_accuracy")
    default_primary = "miou"

    def out_features(self, task: Task) -> int:
        return task.num_classes

    def loss(self, task: Task, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        ignore = _ignore(task)
        # unlabelled samples: every pixel ignored
        target = torch.where(mask[:, None, None], target, torch.full_like(target, ignore))
        raw = F.cross_entropy(pred.float(), target, ignore_index=ignore, reduction="none")
        valid = (target != ignore).to(raw.dtype)
        return (raw * valid).sum() / valid.sum().clamp_min(1.0)

    def metric_inputs(self, task, pred, target, mask):
        return pred[mask].float().argmax(1), target[mask]

    def decode(self, task: Task, pred: Tensor, out: Decoding) -> list[dict]:
        """A PNG of class indices (8-bit up to 256 classes, else 16-bit) per sample, at the input
        image's own size: ``{"mask": <path>}``."""
        classes = pred.argmax(dim=1).numpy()  # [B, H, W]
        mode = "L" if (task.num_classes or 0) <= 256 else "I;16"
        return [{"mask": out.write_image(classes[i], i, task.name, mode)} for i in range(pred.shape[0])]

    def summary(self, task: Task, record: dict) -> str:
        return Path(record["mask"]).name
