"""IMTL-G (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"), gradient part: weights
``alpha`` such that the update ``g = sum_t alpha_t g_t`` has equal projections on every task's
unit gradient ``u_t``. With ``D = [g_1 - g_t]_{t>=2}`` and ``U = [u_1 - u_t]_{t>=2}``:
``alpha_{2:T} = g_1 U^T (D U^T)^{-1}``, ``alpha_1 = 1 - sum alpha_{2:T}``. Computed on the
Gramian (every product above is one of its entries), in float64 then cast back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def imtl_g_weights(M: Tensor) -> Tensor:
    """IMTL-G weights from a Gramian ``M`` [n, n] (pseudo-inverse where D U^T is singular)."""
    n = M.shape[0]
    if n == 1:
        return torch.ones(1, dtype=M.dtype, device=M.device)
    M = M.double()
    norms = M.diagonal().clamp_min(1e-24).sqrt()
    GU = M / norms[None, :]  # GU[i, j] = g_i . u_j
    # D U^T [a, b] = (g_1 - g_a) . (u_1 - u_b), a, b >= 1
    DU = GU[0, 0] - GU[0, 1:][None, :] - GU[1:, 0][:, None] + GU[1:, 1:]
    g1U = GU[0, 0] - GU[0, 1:]  # g_1 . (u_1 - u_b)
    rest = g1U @ torch.linalg.pinv(DU)
    return torch.cat([1 - rest.sum().reshape(1), rest])


@WEIGHTINGS.register("imtl_g")
class IMTLG(GradientWeighting):
    """IMTL-G: equal projections of the update on every task's unit gradient (scale-invariant:
    static task weights have no effect, validation warns)."""

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return imtl_g_weights(M)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True
