"""LeNet-style encoder of the MultiMNIST literature (Sener & Koltun 2018; Lin et al. 2019, Pareto
MTL): per conv layer a ``kernels[i]`` x ``kernels[i]`` convolution (no padding), ReLU and 2 x 2 max
pooling; then the flattened map through one fully connected layer of ``dim`` units and ReLU.

With the defaults (``channels=[10, 20]``, ``kernels=[9, 5]``, ``dim=50``) on 36 x 36 canvases it is
the shared encoder of Pareto MTL's released MultiMNIST code: 36 -> 28 -> 14 -> 10 -> 5, so 20 x 5 x 5
= 500 features into 50 (30,890 parameters); the task heads (``head=default``: linear, 50 -> 10)
follow it. ``dropout`` (off by default) acts before the fully connected layer.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from ...config.params import Dropout, Len, PosInt
from ...data.base import InputSpec
from ...errors import ConfigError, Problem
from ...registry import BACKBONES
from ..base import Backbone


def conv_side(side: int, kernels: list[int]) -> int:
    """Spatial side after each (valid convolution, 2 x 2 max pool) pair; <= 0 when it vanishes."""
    for k in kernels:
        side = (side - k + 1) // 2
    return side


@BACKBONES.register("lenet")
class LeNet(Backbone):
    feature_map = False
    has_stages = True
    modalities = ("image",)

    @classmethod
    def check(cls, node: dict, input_spec: InputSpec) -> list:
        channels = list(node.get("channels", (10, 20)))
        kernels = list(node.get("kernels", (9, 5)))
        if len(channels) != len(kernels):
            return [
                Problem(
                    "backbone.kernels",
                    "needs one kernel size per entry of backbone.channels",
                    kernels,
                    f"a list of {len(channels)} sizes (backbone.channels={channels})",
                    f"set backbone.kernels to {len(channels)} sizes, e.g. {[5] * len(channels)}",
                )
            ]
        side = min(input_spec.shape[1:])
        if conv_side(side, kernels) < 1:
            return [
                Problem(
                    "backbone.kernels",
                    f"leaves no pixel of a {side}-pixel input after each conv + 2x2 pool",
                    kernels,
                    "kernels small enough that every layer keeps at least 1 pixel",
                    "use smaller kernels or fewer layers, or a larger data.image_size",
                )
            ]
        return []

    def __init__(
        self,
        input_spec: InputSpec,
        *,
        channels: Annotated[list[PosInt], Len(min=1)] = (10, 20),
        kernels: Annotated[list[PosInt], Len(min=1)] = (9, 5),
        dim: PosInt = 50,
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        problems = self.check({"channels": channels, "kernels": kernels}, input_spec)
        if problems:
            raise ConfigError(problems)
        c_in = input_spec.shape[0]
        convs: list[nn.Module] = []
        for c, k in zip(channels, kernels, strict=True):
            convs.append(nn.Sequential(nn.Conv2d(c_in, c, k), nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            c_in = c
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *input_spec.shape)).numel()
        fc: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            fc.append(nn.Dropout(dropout))
        fc += [nn.Linear(flat, dim), nn.ReLU(inplace=True)]
        self.fc = nn.Sequential(*fc)
        self.out_shape = (dim,)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """One stage per conv layer, then the fully connected layer."""
        return [(f"conv{i + 1}", m) for i, m in enumerate(self.convs)] + [("fc", self.fc)]

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x))
