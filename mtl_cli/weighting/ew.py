"""Equal weighting: the plain sum of the task losses (every method weight 1; the static
``tasks.<name>.weight`` pre-scale applies as for every method). The usual baseline of the MTL
literature (e.g. LibMTL's EW)."""

from __future__ import annotations

from torch import Tensor

from ..registry import WEIGHTINGS
from .base import Weighting, present_mask


@WEIGHTINGS.register("ew")
class EqualWeighting(Weighting):
    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        return present_mask(losses, present).to(losses.dtype)
