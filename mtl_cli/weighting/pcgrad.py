"""PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning"): for each task
gradient g_i, in a random order over the other tasks j, when ``g_i' . g_j < 0`` project away the
conflicting component: ``g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j``; the update is
``sum_i g_i'``. Every g_i' stays a combination of the original gradients, so the method runs on
the Gramian and returns weights (the update is ``w @ G``). The random order comes from a
generator seeded by ``seed``, saved with the method's state. The T (T - 1) projections run on a
float64 host copy of the Gramian, one step of every task's sequence at a time (vectorised over the
tasks), and divide by ``||g_j||^2`` exactly (a zero gradient conflicts with nothing).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..config.params import Seed
from ..registry import WEIGHTINGS
from ._qp import host, to_torch
from .engine import GradientWeighting, Rows


def pcgrad_weights(M: Tensor, orders: list[list[int]]) -> Tensor:
    """Weights of PCGrad's update on a Gramian ``M`` [n, n] (M's dtype and device); ``orders[i]``:
    the order of the other tasks for task i."""
    K = host(M)
    n = K.shape[0]
    C = np.eye(n)  # row i: g_i' = C[i] @ G
    CG = K.copy()  # CG[i, k] = g_i' . g_k
    diag = np.diag(K).copy()
    rows = np.arange(n)
    order = np.array(orders, dtype=np.int64).reshape(n, -1)
    for step in range(order.shape[1]):
        j = order[:, step]
        dot = CG[rows, j]
        mj = diag[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where((dot < 0) & (mj > 0), -dot / np.where(mj > 0, mj, 1.0), 0.0)
        C[rows, j] += coef
        CG += coef[:, None] * K[j]
    return to_torch(C.sum(0), M)


@WEIGHTINGS.register("pcgrad")
class PCGrad(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        seed: Seed = 0,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.g = torch.Generator().manual_seed(seed)
        self.register_buffer("rng_state", self.g.get_state())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.g.set_state(self.rng_state.cpu())

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        n = M.shape[0]
        orders = []
        for i in range(n):
            others = [j for j in torch.randperm(n, generator=self.g).tolist() if j != i]
            orders.append(others)
        self.rng_state = self.g.get_state()
        return pcgrad_weights(M, orders)
