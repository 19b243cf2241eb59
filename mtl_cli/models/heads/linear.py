"""Linear head: global-average-pool (for maps) then one linear layer."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ...registry import HEADS
from ..base import Head, pool


@HEADS.register("linear")
class LinearHead(Head):
    def __init__(self, in_shape: tuple[int, ...], out_features: int, out_size, *, dropout: float = 0.0):
        super().__init__()
        d = in_shape[0] if len(in_shape) == 3 else int(math.prod(in_shape))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(d, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(pool(x)))
