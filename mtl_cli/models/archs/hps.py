"""Hard parameter sharing (Caruana 1997; Ruder 2017, "An Overview of Multi-Task Learning in Deep
Neural Networks"): one shared backbone, one head per task. The shared representation is the
backbone's output."""

from __future__ import annotations

from typing import Iterator

from torch import Tensor, nn

from ...registry import ARCHS
from ..base import HeadRunner, ModelContext, MTLModel


@ARCHS.register("hps")
class HardParameterSharing(MTLModel):
    single_input = True

    def __init__(self, ctx: ModelContext):
        super().__init__([t.name for t in ctx.tasks])
        self.input_key = ctx.tasks[0].input
        self.backbone = ctx.make_backbone(ctx.inputs[self.input_key])
        self.heads = nn.ModuleDict({t.name: ctx.make_head(t, self.backbone.out_shape) for t in ctx.tasks})
        self.run_heads = HeadRunner(self.heads)

    def encode(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.backbone(inputs[self.input_key])

    def decode(self, rep: Tensor) -> dict[str, Tensor]:
        return self.run_heads(rep)

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()
