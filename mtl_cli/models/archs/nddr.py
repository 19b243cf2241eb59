"""NDDR-CNN (Gao, Ma, Zhao, Liu, Yuille, CVPR 2019, "NDDR-CNN: Layerwise Feature Fusing in
Multi-Task CNNs by Neural Discriminative Dimensionality Reduction"): one backbone column per task,
fused between stages by a learned 1x1 reduction of the concatenated columns."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...config.params import NonNegInt
from ...registry import ARCHS
from ..base import ModelContext
from ..staged import channels, norm, pointwise
from .cross_stitch import InitSelf, MixedColumns


class NDDRUnit(nn.Module):
    """For each task ``t``: ``ReLU(norm_t(W_t · cat[x_1, ..., x_T]))`` with ``W_t`` a 1x1 layer
    (T*C -> C, no bias: the norm follows). ``W_t`` starts as ``init_self`` times the identity on
    task t's own channels and ``(1 - init_self) / (T - 1)`` times the identity on each other
    task's channels (the paper's diagonal initialisation)."""

    def __init__(self, n_tasks: int, shape: tuple[int, ...], init_self: float):
        super().__init__()
        c = channels(shape)
        off = (1.0 - init_self) / (n_tasks - 1) if n_tasks > 1 else 0.0
        self.reduce = nn.ModuleList(pointwise(n_tasks * c, c, shape, bias=False) for _ in range(n_tasks))
        self.norms = nn.ModuleList(norm(c, shape) for _ in range(n_tasks))
        eye = torch.eye(c)
        with torch.no_grad():
            for t, layer in enumerate(self.reduce):
                blocks = [eye * (init_self if u == t else off) for u in range(n_tasks)]
                w = torch.cat(blocks, dim=1)  # [C, T*C]
                layer.weight.copy_(w.reshape(layer.weight.shape))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        cat = torch.cat(xs, dim=1)
        return [torch.relu(bn(layer(cat))) for layer, bn in zip(self.reduce, self.norms)]


@ARCHS.register("nddr")
class NDDR(MixedColumns):
    """NDDR-CNN (Gao et al., CVPR 2019, "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by
    Neural Discriminative Dimensionality Reduction").

    - Task-specific: one full backbone copy ("column", its own parameters, cut into its stages)
      per task, and the task's head.
    - Shared: the NDDR layers. After each chosen stage the T column outputs (C channels each) are
      concatenated to T*C channels, and each task t gets ``ReLU(BN(conv1x1_t(concat)))`` back
      with C channels (Linear and BatchNorm1d for vectors, Conv1d for signal maps). The 1x1
      weights start as in the paper: ``init_self`` times the identity on the task's own channels,
      ``(1 - init_self) / (T - 1)`` times the identity on the others' (0.9 / 0.1 for two tasks).
      The 1x1 layers and norms of all tasks at a stage form one NDDR unit and count as shared:
      each reads every column, so every task's loss trains them.
    - ``encode`` returns ``{task: output of that task's column}`` (after the NDDR layer of the
      last stage, if ``stages`` lists it); ``decode`` applies each task's head to its own features.

    Keys: ``init_self`` in (0, 1]; ``stages``: indices of the stages after which NDDR layers are
    placed (null: after every stage but the last; []: none, independent networks). With one task
    there is nothing to fuse: no NDDR layers, a plain backbone with a head.
    ``mixes_task_parameters`` is True whenever there are NDDR layers and two or more tasks.
    Costs T times the backbone's parameters and compute, plus T*T*C*C weights per NDDR layer.
    """

    unit_name = "NDDR layer"

    def __init__(self, ctx: ModelContext, *, init_self: InitSelf = 0.9, stages: list[NonNegInt] | None = None):
        super().__init__(ctx, init_self=init_self, stages=stages)

    def make_unit(self, n_tasks: int, shape: tuple[int, ...], init_self: float) -> nn.Module:
        return NDDRUnit(n_tasks, shape, init_self)
