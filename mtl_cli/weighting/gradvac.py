"""Gradient Vaccine (Wang et al., ICLR 2021, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models"): for each task gradient g_i, in a random order over
the other tasks j, with ``phi = cos(g_i', g_j)`` and an EMA target ``phi_hat_ij``: when
``phi < phi_hat_ij``, ``g_i' <- g_i' + w g_j`` with the paper's closed form

    w = ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2))

(which makes ``cos(g_i', g_j) = phi_hat``); then ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi``.
The update is ``sum_i g_i'``. Every g_i' stays a combination of the original gradients, so the
method runs on the Gramian (``g_i' . g_j = c_i M_j``, ``||g_i'||^2 = c_i M c_i``) and returns
weights. ``phi_hat`` (one [T, T] block per parameter group with ``grouping=layer``) and the
random order's generator (seeded by ``seed``) are saved with the method's state.

Defaults: ``beta = 0.01`` (the paper's EMA decay; torchjd and LibMTL default to 0.5),
``phi_hat = 0`` at the start (so the first steps act like PCGrad with a zero target).
The T^2 sequential scalar updates run on a float64 CPU copy of the [T, T] Gramian (one transfer
instead of T^2 device synchronisations), as torchjd does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..config.params import Positive, Seed, Unit
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def gradvac_weights(
    M: Tensor, phi: Tensor, orders: list[list[int]], beta: float, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """GradVac on a Gramian ``M`` [n, n] with targets ``phi`` [n, n]; ``orders[i]``: the order of the
    other tasks for task i. Returns (weights [n], updated targets [n, n]); inputs are not modified."""
    n = M.shape[0]
    m = M.detach().double().cpu().tolist()
    ph = phi.detach().double().cpu().tolist()
    total = [0.0] * n
    for i in range(n):
        c = [0.0] * n
        c[i] = 1.0
        cg = list(m[i])  # cg[k] = g_i' . g_k
        sq = m[i][i]  # ||g_i'||^2
        for j in orders[i]:
            ni, nj = math.sqrt(max(sq, 0.0)), math.sqrt(max(m[j][j], 0.0))
            cos = cg[j] / (ni * nj + eps)
            hat = ph[i][j]
            if cos < hat:
                s_cos, s_hat = math.sqrt(max(1.0 - cos * cos, 0.0)), math.sqrt(max(1.0 - hat * hat, 0.0))
                w = ni * (hat * s_cos - cos * s_hat) / (nj * s_hat + eps)
                c[j] += w
                sq += 2 * w * cg[j] + w * w * m[j][j]
                cg = [a + w * b for a, b in zip(cg, m[j])]
            ph[i][j] = (1.0 - beta) * hat + beta * cos
        total = [a + b for a, b in zip(total, c)]
    return (torch.tensor(total, dtype=M.dtype, device=M.device), torch.tensor(ph, dtype=phi.dtype, device=phi.device))


@WEIGHTINGS.register("gradvac")
class GradVac(GradientWeighting):
    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        beta: Unit = 0.01,
        eps: Positive = 1e-8,
        seed: Seed = 0,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.beta, self.eps = float(beta), float(eps)
        n = len(task_names)
        self.register_buffer("phi", torch.zeros(1, n, n, dtype=torch.float64))  # [groups, T, T] EMA targets
        self.g = torch.Generator().manual_seed(seed)
        self.register_buffer("rng_state", self.g.get_state())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "phi"
        if key in state_dict and state_dict[key].shape != self.phi.shape:  # grouping=layer: one block per group
            self.phi = torch.zeros_like(state_dict[key], device=self.phi.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.g.set_state(self.rng_state.cpu())

    def gramian_weights(self, M: Tensor, rows: Rows) -> Tensor:
        n = M.shape[0]
        k = rows.block  # grouping=layer: one block of targets per parameter tensor
        if k >= self.phi.shape[0]:
            extra = torch.zeros(
                k + 1 - self.phi.shape[0], *self.phi.shape[1:], dtype=self.phi.dtype, device=self.phi.device
            )
            self.phi = torch.cat([self.phi, extra])
        orders = [[j for j in torch.randperm(n, generator=self.g).tolist() if j != i] for i in range(n)]
        self.rng_state = self.g.get_state()
        idx = torch.tensor(rows.index, device=self.phi.device)
        block = self.phi[k][idx][:, idx]
        w, new = gradvac_weights(M, block, orders, self.beta, self.eps)
        self.phi[k, idx[:, None], idx[None, :]] = new
        return w
