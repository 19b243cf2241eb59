"""PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning"): for each task
gradient g_i, in a random order over the other tasks j, when ``g_i' . g_j < 0`` project away the
conflicting component: ``g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j``; the update is
``sum_i g_i'``. Every g_i' stays a combination of the original gradients, so the method runs on
the Gramian and returns weights (the update is ``w @ G``). The random order comes from a
generator seeded by ``seed``, saved with the method's state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import Seed
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def pcgrad_weights(M: Tensor, orders: list[list[int]]) -> Tensor:
    """Weights of PCGrad's update on a Gramian ``M`` [n, n]; ``orders[i]``: the order of the other
    tasks for task i."""
    n = M.shape[0]
    total = torch.zeros(n, dtype=M.dtype, device=M.device)
    for i in range(n):
        c = torch.zeros(n, dtype=M.dtype, device=M.device)
        c[i] = 1.0
        for j in orders[i]:
            dot = c @ M[:, j]  # g_i' . g_j
            if dot < 0:
                c[j] -= dot / M[j, j].clamp_min(1e-12)
        total += c
    return total


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
        return pcgrad_weights(M.double(), orders).to(M.dtype)
