"""DualProj (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"; the
projection of Lopez-Paz & Ranzato 2017, GEM, Eq. 11): the mean gradient ``g_0 = G^T 1 / n`` is
projected onto the dual cone of the task gradients, ``{x: G x >= 0}``. By the paper's
Proposition 1 the projection is ``G^T w`` with ``w = argmin_{v >= 1/n} v^T M v`` (``M = G G^T``),
one non-negative QP solved in float64 on the host by an active-set method (:mod:`._qp`), exact up to round-off;
the update is ``w @ G`` (linear in G). As in torchjd (``DualProjWeighting`` with its default
``QuadprogProjector``), ``M`` is divided by its trace (zeroed when the trace is below ``norm_eps``)
and ``reg_eps I`` is added; the preference vector is the mean.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from ..registry import WEIGHTINGS
from ._qp import dual_cone_weights, host, to_torch
from .engine import Rows
from .upgrad import UPGrad


def dualproj_weights(M: Tensor, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Tensor:
    """DualProj weights [n] from a Gramian ``M`` [n, n] (M's dtype and device)."""
    n = M.shape[0]
    return to_torch(dual_cone_weights(host(M), np.full((1, n), 1.0 / n), norm_eps, reg_eps)[0], M)


@WEIGHTINGS.register("dualproj")
class DualProj(UPGrad):
    """Same keys and solver as UPGrad; one projection (of the mean gradient) instead of one per task."""

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return dualproj_weights(M, self.norm_eps, self.reg_eps)
