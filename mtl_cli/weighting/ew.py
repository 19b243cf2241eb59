"""Equal weighting: the plain sum of the task losses (every weight 1, whatever the task configs
say). The usual baseline of the MTL literature (e.g. LibMTL's EW)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import WEIGHTINGS
from .base import Weighting


@WEIGHTINGS.register("ew")
class EqualWeighting(Weighting):
    def __init__(self, task_names: list[str], task_weights: list[float]):
        super().__init__(task_names, task_weights)

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)
