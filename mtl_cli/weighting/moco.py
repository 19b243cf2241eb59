"""MoCo (Fernando et al., ICLR 2023, "Mitigating Gradient Bias in Multi-objective Learning: A
Provably Convergent Approach"), Algorithm 1: each task's stochastic gradient is tracked by a
moving average ``Y <- Y - beta_t (Y - G)`` and the MGDA weights by one projected gradient step
``lambda <- Proj_simplex(lambda - gamma_t (Y Y^T + rho I) lambda)``; the update is ``Y^T lambda``.

The module also holds :class:`StatefulGradientWeighting`, the small base that the stateful
gradient methods (MoCo, ExcessMTL, DB-MTL, Nash-MTL's warm start) share: it lets buffers whose
shape depends on the model (``[T, P]``) be allocated, saved and loaded (``grouping=layer``
aggregates each parameter tensor on its own, so a per-parameter state is kept per block).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from ..config.params import NonNeg, Positive, Range
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


class StatefulGradientWeighting(GradientWeighting):
    """Base of gradient methods with a state per task (and per parameter).

    ``aggregate`` learns which tasks its rows are (absent tasks keep their state) and which block
    of the gradient it sees from its :class:`Rows` argument. Buffers named in ``dynamic_buffers``
    are (re)allocated by :meth:`ensure` when their shape no longer fits (first step, another
    model, ``source=rep`` with another batch size: the state is then reset) and loaded from a
    checkpoint whatever their shape.
    """

    dynamic_buffers: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.dynamic_buffers:
            self.register_buffer(name, torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.dynamic_buffers:
            if prefix + name in state_dict:
                saved = state_dict[prefix + name]
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def ensure(self, name: str, shape: tuple[int, ...], fill: float, like: Tensor) -> Tensor:
        """The buffer ``name`` with ``shape`` on ``like``'s device (reset to ``fill`` when it does not fit)."""
        buf = getattr(self, name)
        if tuple(buf.shape) != tuple(shape) or buf.device != like.device:
            if tuple(buf.shape) == tuple(shape):
                buf = buf.to(like.device)
            else:
                buf = torch.full(shape, fill, dtype=torch.float32, device=like.device)
            setattr(self, name, buf)
        return buf


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of ``v`` [n] on the probability simplex (sort-based, no loop)."""
    n = v.shape[0]
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    idx = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    cond = u - css / idx > 0
    rho = int(cond.nonzero().max()) if bool(cond.any()) else 0
    theta = css[rho] / (rho + 1)
    return (v - theta).clamp_min(0)


def moco_step(Y: Tensor, lam: Tensor, G: Tensor, beta: float, gamma: float, rho: float) -> tuple[Tensor, Tensor]:
    """One MoCo step: ``Y' = Y - beta (Y - G)``, ``lam' = Proj(lam - gamma (Y' Y'^T + rho I) lam)``;
    the update is ``Y'^T lam'``."""
    Y = Y - beta * (Y - G)
    lam = project_simplex(lam - gamma * (Y @ (Y.T @ lam) + rho * lam))
    return Y, lam


@WEIGHTINGS.register("moco")
class MoCo(StatefulGradientWeighting):
    """MoCo (Fernando et al., ICLR 2023), Algorithm 1, at step t (counted per block, from 1)::

        beta_t  = beta / t^beta_sigma,   gamma_t = gamma / t^gamma_sigma
        Y      <- Y - beta_t (Y - G)                                    (tracked gradients [T, P])
        lambda <- Proj_simplex(lambda - gamma_t (Y Y^T + rho I) lambda)
        update  = Y^T lambda

    ``Y`` starts at 0 and ``lambda`` at 1/T. Defaults (beta 0.5, beta_sigma 0.5, gamma 0.1,
    gamma_sigma 0.5, rho 0) are those of the authors' code as shipped in LibMTL; unlike LibMTL
    (softmax, gradients rescaled to the loss's norm) this follows the paper: Euclidean projection on
    the simplex, raw gradients. The paper's projection of ``y`` on a bounded set is omitted (its
    radius is a proof device).

    The update is not a combination of this step's gradients, so ``aggregate`` returns no weights
    (the engine logs NaN; ``lambd`` holds MoCo's weights on the tracked gradients) and ``every``
    must be 1. Absent tasks (multi-dataset) keep their tracked gradient; the step is taken on the
    present tasks' ``lambda`` renormalised, which then keeps its former total mass. With
    ``grouping=layer`` every parameter tensor has its own ``lambda`` (``Y`` is per parameter
    anyway). State (``y`` [T, P], ``lambd`` [blocks, T], ``steps`` [blocks]) lives in buffers;
    it is reset if the gradient's size changes (e.g. ``source=rep`` with a smaller last batch).
    """

    linear = False
    dynamic_buffers = ("y", "lambd", "steps")

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        beta: Annotated[float, Range(gt=0, le=1)] = 0.5,
        beta_sigma: NonNeg = 0.5,
        gamma: Positive = 0.1,
        gamma_sigma: NonNeg = 0.5,
        rho: NonNeg = 0.0,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        self.beta, self.beta_sigma, self.gamma, self.gamma_sigma, self.rho = beta, beta_sigma, gamma, gamma_sigma, rho

    def aggregate(self, G: Tensor, rows: Rows | None = None):
        rows = rows if rows is not None else Rows.every(G)
        k, lo, nb, total = rows.block, rows.offset, rows.blocks, rows.size
        index = torch.tensor(rows.index, device=G.device)
        T = len(self.task_names)
        y = self.ensure("y", (T, total), 0.0, G)
        lambd = self.ensure("lambd", (nb, T), 1.0 / T, G)
        steps = self.ensure("steps", (nb,), 0.0, G)
        steps[k] += 1
        t = float(steps[k])
        beta, gamma = self.beta / t**self.beta_sigma, self.gamma / t**self.gamma_sigma
        hi = lo + G.shape[1]
        lam = lambd[k, index]
        mass = lam.sum().clamp_min(1e-12)
        Y, lam = moco_step(y[index, lo:hi], lam / mass, G.float(), beta, gamma, self.rho)
        y[index, lo:hi] = Y
        lambd[k, index] = lam * mass
        return None, (lam @ Y).to(G.dtype)
