"""ConFIG (Liu et al., 2024, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks", Eq. 2): with U the matrix of unit gradients (rows ``g_i / ||g_i||``) and a preference
vector p (default all ones),

    d_u = unit(U^+ p),        d = (sum_i g_i . d_u) d_u,

a direction with equal cosines to every task gradient (for full-rank U), scaled by the sum of the
gradients' projections on it. ``U^+ p = U^T (U U^T)^+ p`` is a combination of the rows, so the
method runs on the Gramian and returns weights: with ``D = diag(1 / ||g_i||)``,
``a = (D M D)^+ p``, ``c = D a`` (``U^+ p = c @ G``) and ``w = (1^T M c) c / (c^T M c)``.
Zero and negligible gradients (:func:`.engine.informative_rows`) get weight 0 (torchjd zeroes
their unit rows). Computed in float64 on the host; the pseudo-inverse of ``U U^T`` drops
eigenvalues below :func:`._qp.rank_rtol` of the largest: ``1e-12`` for a float64 Gramian
(singular values of U below 1e-6 of the largest), ``8 n eps`` for a float32 one, whose round-off
eigenvalues would otherwise be inverted (a rank-deficient U then gave a zero direction).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..config.params import NonNeg
from ..errors import Problem
from ..registry import WEIGHTINGS
from ._qp import host, pinv_psd, rank_rtol
from .engine import GradientWeighting, Rows, weights_on_informative_rows


def config_on_rows(M: np.ndarray, p: np.ndarray, rtol: float) -> np.ndarray:
    """ConFIG weights of a float64 Gramian whose rows are all non-zero, preference ``p``."""
    inv = 1.0 / np.sqrt(np.diag(M))
    Mu = M * inv[:, None] * inv[None, :]  # U U^T
    c = (pinv_psd(Mu, rtol) @ p) * inv  # U^+ p = c @ G
    Mc = M @ c
    sq = float(c @ Mc)  # ||U^+ p||^2
    return (float(Mc.sum()) / sq) * c if sq > 0 else np.zeros_like(c)


def config_weights(M: Tensor, pref: Tensor | None = None, rtol: float | None = None) -> Tensor:
    """ConFIG weights from a Gramian ``M`` [n, n] and a preference vector [n] (default ones);
    ``rtol``: the eigenvalue cut-off of ``U U^T`` (default :func:`._qp.rank_rtol` of M's dtype)."""
    n = M.shape[0]
    p = np.ones(n) if pref is None else host(pref)
    return weights_on_informative_rows(
        M, lambda K, keep: config_on_rows(K, p[keep], rank_rtol(n, M.dtype) if rtol is None else rtol)
    )


@WEIGHTINGS.register("conflict_free")
class ConFIG(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        pref_vector: list[NonNeg] | None = None,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        n = len(task_names)
        self.register_buffer(
            "pref", torch.tensor([1.0] * n if pref_vector is None else pref_vector, dtype=torch.float32)
        )

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        pref = self.pref[torch.tensor(rows.index, device=self.pref.device)].to(M.device)
        return config_weights(M, pref)

    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        out = super().check(node, arch_cls, task_names)
        pref = node.get("pref_vector")
        if isinstance(pref, list) and len(pref) != len(task_names):
            out.append(
                Problem(
                    "weighting.pref_vector",
                    f"one entry per enabled task is needed ({len(task_names)}: {', '.join(task_names)})",
                    pref,
                    f"a list of {len(task_names)} numbers >= 0, or null (all ones)",
                    "give one preference per task, in task order, or set weighting.pref_vector=null",
                )
            )
        return out

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True  # unit gradients set the direction
