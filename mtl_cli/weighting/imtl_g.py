"""IMTL-G (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"), gradient part: weights
``alpha`` (summing to 1) such that the update ``g = sum_t alpha_t g_t`` has equal projections on
every task's unit gradient ``u_t = g_t / ||g_t||``. The paper's closed form
(``alpha_{2:T} = g_1 U^T (D U^T)^{-1}`` with ``D = [g_1 - g_t]``, ``U = [u_1 - u_t]``) singles out
task 1; the same conditions on the Gramian, ``(M alpha)_t / ||g_t||`` equal for every t, read
``alpha ∝ N^-1 C^+ 1`` with ``N = diag(||g_t||)`` and ``C = N^-1 M N^-1`` (the unit gradients'
Gramian), which treats every task alike (torchjd's ``pinv(M) ||g||`` up to the equilibration).
Computed in float64 on the host; the pseudo-inverse drops eigenvalues of C below
:func:`._qp.rank_rtol` (the round-off of a Gramian in its dtype). A zero or negligible gradient
has no unit vector: it is left out (weight 0) and the others are solved without it; when the
weights cannot be normalised (``sum C^+ 1 / ||g|| ~ 0``, e.g. two opposite gradients) they are 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..registry import WEIGHTINGS
from ._qp import pinv_psd, rank_rtol
from .engine import GradientWeighting, Rows, weights_on_informative_rows


def imtl_g_on_rows(M: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """IMTL-G weights [n] of a float64 Gramian whose rows are all non-zero (computed in ``dtype``)."""
    n = M.shape[0]
    if n == 1:
        return np.ones(1)
    norms = np.sqrt(np.diag(M))
    C = M / norms[:, None] / norms[None, :]
    v = (pinv_psd(C, rank_rtol(n, dtype)) @ np.ones(n)) / norms
    total = float(v.sum())
    if not abs(total) > 1e-10 * float(np.abs(v).sum()):
        return np.zeros(n)
    return v / total


def imtl_g_weights(M: Tensor) -> Tensor:
    """IMTL-G weights from a Gramian ``M`` [n, n] (M's dtype and device; 0 on zero rows)."""
    return weights_on_informative_rows(M, lambda K, keep: imtl_g_on_rows(K, M.dtype))


@WEIGHTINGS.register("imtl_g")
class IMTLG(GradientWeighting):
    """IMTL-G: equal projections of the update on every task's unit gradient (scale-invariant:
    static task weights have no effect, validation warns)."""

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return imtl_g_weights(M)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
