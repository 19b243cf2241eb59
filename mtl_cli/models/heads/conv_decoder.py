"""Light convolutional decoder for dense tasks (FCN-style, Long et al. 2015): a conv-BN-ReLU at
the feature resolution, a second one (half the channels) at twice that resolution, a 1x1 conv to
the per-pixel outputs, and bilinear upsampling of those outputs to the target size. Refining at
2x and upsampling only the K output maps keeps it cheap next to the backbone."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ...config.params import PosInt
from ...registry import HEADS
from ..base import Head


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@HEADS.register("conv_decoder")
class ConvDecoder(Head):
    needs_feature_map = True
    dense_output = True

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_features: int,
        out_size: tuple[int, int] | None,
        *,
        hidden: PosInt = 64,
    ):
        super().__init__()
        self.out_size = tuple(out_size) if out_size is not None else None
        self.pre = _block(in_shape[0], hidden)
        self.refine = _block(hidden, max(1, hidden // 2))
        self.out = nn.Conv2d(max(1, hidden // 2), out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre(x)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.out(self.refine(x))
        if self.out_size is not None and tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return x
