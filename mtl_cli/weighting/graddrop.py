"""GradDrop (Chen et al., NeurIPS 2020, "Just Pick a Sign: Optimizing Deep Multitask Models with
Gradient Sign Dropout"), the combination step (lines 10-15 of the paper's Algorithm 1): per
coordinate, the positive sign purity

    P = 0.5 (1 + sum_i g_i / sum_i |g_i|)

and a uniform draw U; the positive components are kept where ``P > U``, the negative ones where
``P < U``; the direction is ``sum_i (l_i + (1 - l_i) M_i) g_i`` with M_i the mask of task i and
``l_i`` its leak (default 0: no leak). The masks depend on each coordinate's sign, so the update is
not a combination of the task gradients: the method returns a direction only (no weights; the
engine's ``every`` reuse does not apply). Coordinates where every gradient is 0 contribute 0.

The draws come from a generator on G's device seeded by ``seed``; its state is saved with the
method (a checkpoint resumes the same draws on the same device type; on another one the
generator is re-seeded). The paper applies GradDrop to activations: ``source=rep``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config.params import Seed, Unit
from ..errors import Problem
from ..registry import WEIGHTINGS
from .engine import GradientWeighting, Rows


def graddrop_direction(G: Tensor, U: Tensor, leak: Tensor | None = None) -> Tensor:
    """GradDrop's direction for gradients ``G`` [n, P], draws ``U`` [P] in [0, 1) and leaks [n]."""
    denom = G.abs().sum(0)
    P = 0.5 * (1 + G.sum(0) / torch.where(denom > 0, denom, torch.ones_like(denom)))
    mask = ((P > U)[None, :] & (G > 0)) | ((P < U)[None, :] & (G < 0))
    if leak is None:
        return (mask * G).sum(0)
    leak = leak.to(G.dtype)[:, None]
    return ((leak + (1 - leak) * mask) * G).sum(0)


@WEIGHTINGS.register("graddrop")
class GradDrop(GradientWeighting):
    linear = False

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        leak: Unit | list[Unit] = 0.0,
        seed: Seed = 0,
        **engine,
    ):
        super().__init__(task_names, task_weights, **engine)
        n = len(task_names)
        leaks = [float(leak)] * n if isinstance(leak, (int, float)) else [float(x) for x in leak]
        self.register_buffer("leak", torch.tensor(leaks))
        self._leaky = any(x > 0 for x in leaks)
        self.seed = seed
        self.register_buffer("rng_state", torch.zeros(0, dtype=torch.uint8))  # empty: not drawn yet
        self._gen: torch.Generator | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "rng_state"
        if key in state_dict:  # its size depends on the device type of the generator that made it
            self.rng_state = torch.zeros_like(state_dict[key], device=self.rng_state.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._gen = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            g = torch.Generator(device=device).manual_seed(self.seed)
            state = self.rng_state.cpu()
            if state.numel() == g.get_state().numel():
                g.set_state(state)
            self._gen = g
        return self._gen

    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        out = super().check(node, arch_cls, task_names)
        leak = node.get("leak", 0.0)
        if isinstance(leak, list) and len(leak) != len(task_names):
            out.append(
                Problem(
                    "weighting.leak",
                    f"a list needs one leak per enabled task ({len(task_names)}: {', '.join(task_names)})",
                    leak,
                    "a number in [0, 1], or one per task",
                    "give one number for every task, or a list in task order",
                )
            )
        return out

    def aggregate(self, G: Tensor, rows: Rows | None = None):
        rows = rows if rows is not None else Rows.every(G)
        g = self._generator(G.device)
        U = torch.rand(G.shape[1], generator=g, device=G.device, dtype=G.dtype)
        self.rng_state = g.get_state()
        leak = self.leak[torch.tensor(rows.index, device=self.leak.device)].to(G.device)
        return None, graddrop_direction(G, U, leak if self._leaky else None)
