"""DB-MTL (Lin et al., 2023, "Dual-Balancing Multi-Task Learning"): loss-scale balancing by the
log transform (each task's gradient of ``log L_t`` is ``g_t / L_t``) and gradient-magnitude
balancing: an exponential moving average ``h_t`` of each task's log-loss gradient is rescaled to
the largest EMA norm, ``update = sum_t (max_s ||h_s|| / ||h_t||) h_t``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from ..config.params import NonNeg, Range
from ..registry import WEIGHTINGS
from .engine import Rows
from .moco import StatefulGradientWeighting


def db_mtl_step(H: Tensor, G: Tensor, losses: Tensor, beta: float, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """One DB-MTL step: ``H' = beta H + (1 - beta) G / (L + eps)`` and the update
    ``sum_t (max_s ||H'_s|| / (||H'_t|| + eps)) H'_t``."""
    g = G / (losses[:, None] + eps)
    H = g + beta * (H - g)
    norms = H.norm(dim=1)
    return H, (norms.max() / (norms + eps)) @ H


@WEIGHTINGS.register("db_mtl")
class DBMTL(StatefulGradientWeighting):
    """DB-MTL (Lin et al., 2023), Algorithm 1, at step k (counted per block, from 1)::

        g_t   = grad log(L_t + 1e-8) = G_t / (L_t + 1e-8)           (losses: ``rows.losses``)
        beta_k = beta / k^beta_sigma
        h_t  <- beta_k h_t + (1 - beta_k) g_t                       (EMA, h starts at 0, no bias correction)
        update = sum_t (max_s ||h_s|| / (||h_t|| + 1e-8)) h_t

    The log transform assumes positive losses (as the paper). Defaults ``beta = 0.9``,
    ``beta_sigma = 0`` as in LibMTL (the authors' implementation). The
    update is not a combination of this step's gradients, so ``aggregate`` returns no weights (the
    engine logs NaN) and ``every`` must be 1. Absent tasks keep their EMA and are left out of the
    sum and the max. With ``grouping=layer`` the norms (and so the balancing) are per parameter
    tensor. The EMAs ``h`` [T, P] and the step counts ``steps`` [blocks] are buffers; they are
    reset if the gradient's size changes (``source=rep`` with another batch size; LibMTL refuses
    representation gradients for DB-MTL).
    """

    linear = False
    dynamic_buffers = ("h", "steps")

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        beta: Annotated[float, Range(ge=0, lt=1)] = 0.9,
        beta_sigma: NonNeg = 0.0,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)

    def aggregate(self, G: Tensor, rows: Rows | None = None):
        rows = rows if rows is not None else Rows.every(G)
        k, lo, nb, total = rows.block, rows.offset, rows.blocks, rows.size
        index = torch.tensor(rows.index, device=G.device)
        T = len(self.task_names)
        h = self.ensure("h", (T, total), 0.0, G)
        steps = self.ensure("steps", (nb,), 0.0, G)
        steps[k] += 1
        beta = self.beta / float(steps[k]) ** self.beta_sigma
        hi = lo + G.shape[1]
        losses = rows.losses.to(device=G.device, dtype=torch.float32)
        H, d = db_mtl_step(h[index, lo:hi], G.float(), losses, beta)
        h[index, lo:hi] = H
        return None, d.to(G.dtype)

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        return True  # log losses, then norms balanced
