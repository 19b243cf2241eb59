"""Static weighting: the sum of the task losses, each times its fixed ``tasks.<name>.weight`` (1.0
by default). Every method applies the task weights as a pre-scale of the losses
(:mod:`.base`), so this is :mod:`.ew` with one more key: ``normalize`` rescales the task weights
so that they sum to the number of tasks."""

from __future__ import annotations

from ..registry import WEIGHTINGS
from .ew import EqualWeighting


@WEIGHTINGS.register("static")
class StaticWeighting(EqualWeighting):
    def __init__(self, task_names: list[str], task_weights: list[float], *, normalize: bool = False):
        if normalize:  # rescale so the weights sum to the number of tasks
            total = sum(task_weights)
            task_weights = [w * len(task_names) / max(total, 1e-12) for w in task_weights]
        super().__init__(task_names, task_weights)
