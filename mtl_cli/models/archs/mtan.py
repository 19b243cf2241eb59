"""Multi-Task Attention Network, MTAN (Liu, Johns, Davison, CVPR 2019, "End-to-End Multi-Task
Learning with Attention"): one shared backbone, and per task a soft-attention module at every
stage that selects the task's features from the shared ones."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor, nn

from ...config.params import Positive
from ...registry import ARCHS
from ..base import ModelContext, MTLModel
from ..staged import channels, make_staged, norm, pointwise, resize


class StageAttention(nn.Module):
    """One task's attention at one stage: ``mask = sigmoid(block(f_s or cat[f_s, adapt(a_prev)]))``,
    ``a_s = mask * f_s``. ``block`` = pointwise-norm-ReLU-pointwise-norm; ``adapt`` = pointwise to
    f_s's channels, then ``resize`` to f_s's spatial size."""

    def __init__(self, shape: tuple[int, ...], prev_shape: tuple[int, ...] | None, hidden_ratio: float):
        super().__init__()
        c = channels(shape)
        hidden = max(1, round(hidden_ratio * c))
        self.size = tuple(shape[1:])
        self.adapt = pointwise(channels(prev_shape), c, prev_shape) if prev_shape is not None else None
        c_in = 2 * c if self.adapt is not None else c
        self.block = nn.Sequential(
            pointwise(c_in, hidden, shape, bias=False),
            norm(hidden, shape),
            nn.ReLU(inplace=True),
            pointwise(hidden, c, shape, bias=False),
            norm(c, shape),
        )

    def mask(self, f: Tensor, prev: Tensor | None) -> Tensor:
        x = f if self.adapt is None else torch.cat([f, resize(self.adapt(prev), self.size)], dim=1)
        return torch.sigmoid(self.block(x))

    def forward(self, f: Tensor, prev: Tensor | None) -> Tensor:
        return self.mask(f, prev) * f


@ARCHS.register("mtan")
class MTAN(MTLModel):
    """MTAN (Liu, Johns, Davison, CVPR 2019, "End-to-End Multi-Task Learning with Attention").

    - Shared: one backbone, cut into its stages; it runs once per batch, giving ``f_1..f_S``.
    - Task-specific: per task and stage ``s`` a soft-attention module, and the task's head. The
      module computes ``mask_s^t = sigmoid(block(f_s))`` at the first stage and
      ``sigmoid(block(cat[f_s, adapt_s^t(a_{s-1}^t)]))`` after it, with ``block`` =
      pointwise-norm-ReLU-pointwise-norm (1x1 conv for maps, Linear for vectors) and ``adapt``
      a pointwise layer to f_s's channels followed by ``resize`` to f_s's spatial size; the
      task's attended features are ``a_s^t = mask_s^t * f_s``.
    - ``encode`` returns ``{task: a_S^t}``, the task's attended features of the last stage, each
      of the backbone's output shape; ``decode`` applies each task's head to its own.

    Key: ``hidden_ratio`` (> 0), the width of the mask block's hidden layer as a fraction of the
    stage's channels (at least 1). The paper uses the full width (1.0) and computes the mask from
    the first layer of a block to weight its last; stages here are opaque, so both are the
    stage's output, and ``adapt`` is a 1x1 layer per task where the paper uses a 3x3 conv shared
    by the tasks. Attention modules read only shared features and their own task's features, so
    a task's parameters get no gradient from another task's loss (``mixes_task_parameters`` is
    False).
    """

    single_input = True
    needs_stages = True
    shared_representation = False
    mixes_task_parameters = False

    def __init__(self, ctx: ModelContext, *, hidden_ratio: Positive = 0.5):
        super().__init__([t.name for t in ctx.tasks])
        self.input_key = ctx.tasks[0].input
        self.backbone = make_staged(ctx.make_backbone, ctx.inputs[self.input_key])
        shapes = self.backbone.shapes
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleList(
                    StageAttention(shape, shapes[s - 1] if s > 0 else None, float(hidden_ratio))
                    for s, shape in enumerate(shapes)
                )
                for t in self.task_names
            }
        )
        self.out_shape = shapes[-1]
        self.heads = nn.ModuleDict({t.name: ctx.make_head(t, self.out_shape) for t in ctx.tasks})

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        x = inputs[self.input_key]
        att: list[Tensor | None] = [None] * len(self.task_names)
        for s, stage in enumerate(self.backbone.stages):
            x = stage(x)
            att = [self.attention[t][s](x, a) for t, a in zip(self.task_names, att)]
        return dict(zip(self.task_names, att))

    def decode(self, rep: dict[str, Tensor]) -> dict[str, Tensor]:
        return {t: self.heads[t](rep[t]) for t in self.task_names if t in rep}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.attention[task].parameters()
        yield from self.heads[task].parameters()
