"""MLP head: global-average-pool (for maps), hidden Linear-ReLU layers, output layer."""

from __future__ import annotations

from torch import Tensor, nn

from ...config.params import Dropout, PosInt
from ...registry import HEADS
from ..base import Head, pool, pooled_dim


@HEADS.register("mlp")
class MLPHead(Head):
    pools_input = True

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_features: int,
        out_size,
        *,
        hidden: list[PosInt] = (128,),  # [] : a linear head
        dropout: Dropout = 0.0,
    ):
        super().__init__()
        d = pooled_dim(in_shape)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(pool(x))
