"""Light convolutional decoder for dense tasks: conv-BN-ReLU at the feature resolution, bilinear
upsampling to the output size, one more conv-ReLU, then a 1x1 conv to the per-pixel outputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import HEADS
from ..base import Head


@HEADS.register("conv_decoder")
class ConvDecoder(Head):
    needs_feature_map = True
    dense_output = True

    def __init__(
        self, in_shape: tuple[int, ...], out_features: int, out_size: tuple[int, int] | None, *,
        hidden: int = 64,
    ):
        super().__init__()
        self.out_size = tuple(out_size) if out_size is not None else None
        self.pre = nn.Sequential(
            nn.Conv2d(in_shape[0], hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.post = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre(x)
        if self.out_size is not None and tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return self.out(self.post(x))
