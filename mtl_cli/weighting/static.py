"""Static weighting: the sum of the task losses, each times its fixed ``tasks.<name>.weight``
(1.0 by default, so with untouched task configs it equals ``ew``)."""

from __future__ import annotations

from torch import Tensor

from ..registry import WEIGHTINGS
from .base import Weighting


@WEIGHTINGS.register("static")
class StaticWeighting(Weighting):
    def __init__(self, task_names: list[str], task_weights: list[float], *, normalize: bool = False):
        super().__init__(task_names, task_weights)
        if normalize:  # rescale so the weights sum to the number of tasks
            self.task_weights.mul_(len(task_names) / self.task_weights.sum().clamp_min(1e-12))

    def weights(self, losses: Tensor) -> Tensor:
        return self.task_weights.to(losses.dtype)
