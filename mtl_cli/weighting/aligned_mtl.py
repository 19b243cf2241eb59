"""Aligned-MTL (Senushkin et al., CVPR 2023, "Independent Component Alignment for Multi-Task
Learning", Algorithm 1): the gradient system is made well conditioned before it is combined.
With the Gramian ``M = G G^T = V diag(lambda) V^T`` (eigenvalues above ``max(lambda) n eps``, eps
of G's dtype, kept: rank r), the balance transformation is
``B = sqrt(lambda_scale) V diag(1 / sqrt(lambda)) V^T`` and the aligned gradients ``B G`` are
orthogonal with equal norms ``sqrt(lambda_scale)`` (``B M B = lambda_scale I`` at full rank). The
weights are ``w = B p`` with the preference vector ``p = 1 / n`` (the mean) and the update is
``w @ G`` (linear in G). ``scale_mode`` picks ``lambda_scale``: ``min`` (the smallest kept
eigenvalue, the paper and torchjd's default), ``median`` or ``rmse`` (the mean eigenvalue, the
original code's other option). Follows torchjd's ``AlignedMTLWeighting``; computed in float64 on
the host.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..registry import WEIGHTINGS
from ._qp import host, to_torch
from .engine import GradientWeighting, Rows

SCALE_MODES = ("min", "median", "rmse")


def balance_transformation(M: Tensor, scale_mode: str = "min", eps_dtype: torch.dtype | None = None) -> Tensor:
    """Aligned-MTL's ``B`` [n, n] from a Gramian ``M`` [n, n]; the rank cut-off uses the machine
    epsilon of ``eps_dtype`` (default: M's dtype), the precision the Gramian was computed in."""
    return to_torch(balance_on_host(host(M), scale_mode, eps_dtype or M.dtype), M)


def balance_on_host(M: np.ndarray, scale_mode: str, eps_dtype: torch.dtype) -> np.ndarray:
    """:func:`balance_transformation` of a float64 host Gramian."""
    eps = float(torch.finfo(eps_dtype).eps)
    n = M.shape[0]
    lam, V = np.linalg.eigh(M)
    keep = lam > lam.max() * n * eps
    if not keep.any():
        return np.eye(n)
    lam, V = lam[keep], V[:, keep]
    if scale_mode == "min":
        scale = float(lam.min())
    elif scale_mode == "median":
        scale = float(torch.tensor(lam).median())  # torchjd's median: the lower of the two middle values
    elif scale_mode == "rmse":
        scale = float(lam.mean())
    else:
        raise ValueError(f"weighting.scale_mode={scale_mode!r} not in {SCALE_MODES}")
    return np.sqrt(scale) * (V / np.sqrt(lam)) @ V.T


def aligned_mtl_weights(M: Tensor, scale_mode: str = "min", eps_dtype: torch.dtype | None = None) -> Tensor:
    """Aligned-MTL weights [n] (``B`` applied to the mean preference vector)."""
    n = M.shape[0]
    B = balance_on_host(host(M), scale_mode, eps_dtype or M.dtype)
    return to_torch(B @ np.full(n, 1.0 / n), M)


@WEIGHTINGS.register("aligned_mtl")
class AlignedMTL(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        scale_mode: Literal["min", "median", "rmse"] = "min",
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.scale_mode = scale_mode

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        return aligned_mtl_weights(M, self.scale_mode)
