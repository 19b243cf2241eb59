"""A small CNN for small images (MNIST-, CIFAR- or shapes-sized): conv-BN-ReLU blocks; every
block after the first halves the resolution, so ``channels=[32, 64, 128]`` maps 32x32 to 8x8."""

from __future__ import annotations

from typing import Annotated

from torch import Tensor, nn

from ...config.params import Dropout, Len, PosInt
from ...data.base import InputSpec
from ...registry import BACKBONES
from ..base import Backbone


@BACKBONES.register("small_cnn")
class SmallCNN(Backbone):
    feature_map = True
    has_stages = True
    modalities = ("image",)

    def __init__(
        self,
        input_spec: InputSpec,
        *,
        channels: Annotated[list[PosInt], Len(min=1)] = (32, 64, 128),
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        c_in = input_spec.shape[0]
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            block = nn.Sequential(
                nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            )
            layers.append(block)
            c_in = c
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.blocks = nn.Sequential(*layers)
        down = 2 ** (len(channels) - 1)
        h, w = input_spec.shape[1:]
        self.out_shape = (c_in, -(-h // down), -(-w // down))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """One stage per conv block; a trailing dropout joins the last block."""
        mods = list(self.blocks)
        if isinstance(mods[-1], nn.Dropout2d):
            mods = mods[:-2] + [nn.Sequential(mods[-2], mods[-1])]
        return [(f"block{i + 1}", m) for i, m in enumerate(mods)]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
