"""Linear head: global-average-pool (for maps) then one linear layer. Linear heads without
dropout on the same features fuse: one matmul with the concatenated weights serves them all."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config.params import Dropout
from ...registry import HEADS
from ..base import Head, pool, pooled_dim


@HEADS.register("linear")
class LinearHead(Head):
    pools_input = True

    def __init__(self, in_shape: tuple[int, ...], out_features: int, out_size, *, dropout: Dropout = 0.0):
        super().__init__()
        d = pooled_dim(in_shape)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(d, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(pool(x)))

    def fuse_key(self) -> tuple | None:
        return None if isinstance(self.drop, nn.Dropout) else (self.fc.in_features,)

    @staticmethod
    def forward_fused(heads: list[Head], x: Tensor) -> list[Tensor]:
        w = torch.cat([h.fc.weight for h in heads])
        b = torch.cat([h.fc.bias for h in heads])
        return list(F.linear(pool(x), w, b).split([h.fc.out_features for h in heads], dim=-1))
