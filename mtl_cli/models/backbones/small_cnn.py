"""A small CNN for small images (MNIST-, CIFAR- or shapes-sized): conv-BN-ReLU blocks; every
block after the first halves the resolution, so ``channels=[32, 64, 128]`` maps 32x32 to 8x8."""

from __future__ import annotations

from torch import Tensor, nn

from ...data.base import InputSpec
from ...registry import BACKBONES
from ..base import Backbone


@BACKBONES.register("small_cnn")
class SmallCNN(Backbone):
    feature_map = True

    def __init__(self, input_spec: InputSpec, *, channels: list[int] = (32, 64, 128), dropout: float = 0.0):
        super().__init__()
        c_in = input_spec.shape[0]
        layers: list[nn.Module] = []
        self._stages = []
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

    def stage_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
