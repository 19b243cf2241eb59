"""ConFIG (Liu et al., 2024, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks", Eq. 2): with U the matrix of unit gradients (rows ``g_i / ||g_i||``) and a preference
vector p (default all ones),

    d_u = unit(U^+ p),        d = (sum_i g_i . d_u) d_u,

a direction with equal cosines to every task gradient (for full-rank U), scaled by the sum of the
gradients' projections on it. ``U^+ p = U^T (U U^T)^+ p`` is a combination of the rows, so the
method runs on the Gramian and returns weights: with ``D = diag(1 / ||g_i||)``,
``a = (D M D)^+ p``, ``c = D a`` (``U^+ p = c @ G``) and ``w = (1^T M c) c / (c^T M c)``.
Zero gradients get weight 0 (torchjd zeroes their unit rows). Computed in float64 on the Gramian's
device; the pseudo-inverse drops eigenvalues below ``1e-12`` of the largest (singular values of U
below 1e-6 of the largest, about float32's precision).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import NonNeg
from ..errors import Problem
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def config_weights(M: Tensor, pref: Tensor | None = None, rtol: float = 1e-12) -> Tensor:
    """ConFIG weights from a Gramian ``M`` [n, n] and a preference vector [n] (default ones)."""
    dtype = M.dtype
    M = M.double()
    n = M.shape[0]
    p = torch.ones(n, dtype=M.dtype, device=M.device) if pref is None else pref.to(M)
    norms = M.diagonal().clamp_min(0).sqrt()
    inv = torch.where(norms > 0, 1 / norms.clamp_min(1e-300), torch.zeros_like(norms))
    Mu = M * inv[:, None] * inv[None, :]  # U U^T
    c = (torch.linalg.pinv(Mu, rtol=rtol, hermitian=True) @ p) * inv  # U^+ p = c @ G
    Mc = M @ c
    sq = c @ Mc  # ||U^+ p||^2
    scale = torch.where(sq > 0, Mc.sum() / sq.clamp_min(1e-300), torch.zeros_like(sq))  # 0 when every g_i = 0
    return (scale * c).to(dtype)


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
