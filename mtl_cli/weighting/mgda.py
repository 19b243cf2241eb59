"""MGDA (Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as Multi-Objective Optimization"): the
minimum-norm point of the convex hull of the task gradients,
``w* = argmin_{w in simplex} || sum_t w_t g_t ||^2``, found on the Gramian by Wolfe's active-set
algorithm in float64 on the host (:func:`._qp.min_norm_point`: exact up to float64 round-off on the
Gramian it is given, where the paper's Algorithm 2, Frank-Wolfe, and torchjd stop at a tolerance).
The update is ``sum_t w*_t g_t``, a common descent direction (zero at a Pareto-stationary point,
e.g. when one task's gradient is zero: MGDA's own answer).

``normalization`` rescales each gradient first, as in the paper's code: ``none`` (default),
``l2`` (unit norm), ``loss`` (divided by the loss) or ``loss+`` (loss times norm). With a
normalization, zero and negligible gradients (norm at most the dtype's epsilon times the largest)
are left out (weight 0) instead of being divided by ~0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from ..registry import WEIGHTINGS
from ._qp import host, min_norm_point, to_torch
from .engine import GradientWeighting, Rows, weights_on_informative_rows


def min_norm_weights(M: Tensor) -> Tensor:
    """Weights on the simplex minimising ``w^T M w`` (M: a Gramian [n, n]), in M's dtype and on
    its device; solved in float64 on the host (equal weights for an all-zero M)."""
    return to_torch(min_norm_point(host(M))[0], M)


@WEIGHTINGS.register("mgda")
class MGDA(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        normalization: Literal["none", "l2", "loss", "loss+"] = "none",
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.normalization = normalization

    def _scales(self, M: np.ndarray, losses: np.ndarray) -> np.ndarray:
        norms = np.sqrt(np.clip(np.diag(M), 0.0, None))
        if self.normalization == "l2":
            return 1.0 / norms
        loss = np.maximum(losses, 1e-12)
        return 1.0 / (loss * (norms if self.normalization == "loss+" else 1.0))

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        if self.normalization == "none":
            return min_norm_weights(M)
        losses = host(rows.losses)

        def solve(K: np.ndarray, keep: np.ndarray) -> np.ndarray:
            s = self._scales(K, losses[keep])
            return min_norm_point(K * s[:, None] * s[None, :])[0] * s  # weights on the raw gradients

        return weights_on_informative_rows(M, solve)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return node.get("normalization", "none") in ("l2", "loss")


@WEIGHTINGS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018): MGDA on the gradients with respect to the shared
    representation (an upper bound of the parameter objective), one encoder backward per step
    instead of one per task. Same as ``weighting=mgda weighting.source=rep``."""

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        source: Literal["params", "rep"] = "rep",
        **kwargs,
    ):
        super().__init__(task_names, task_weights, source=source, **kwargs)
