"""RLW: random loss weighting (fresh random weights on the simplex every step)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..config.params import Seed
from ..registry import WEIGHTINGS
from .base import Weighting, present_mask


@WEIGHTINGS.register("rlw")
class RandomLossWeighting(Weighting):
    r"""Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning", TMLR 2022.

    Every call (micro-batch) draws ``x ~ D`` for all T tasks and uses::

        normal:    w = softmax(x),  x_t ~ N(0, 1)        (the paper's default)
        uniform:   w = softmax(x),  x_t ~ U(0, 1)
        dirichlet: w = x / sum(x),  x_t ~ Exp(1)         (= Dirichlet(1, ..., 1))
        total = sum_t w_t L_t

    The weights sum to 1 over the tasks present this step (absent tasks get 0; T values are drawn
    every call whatever the mask, so the random sequence does not depend on which tasks are
    present). The draws come from a CPU ``torch.Generator``
    seeded with ``seed``; its state is written into the ``rng_state`` buffer whenever the
    state_dict is taken and restored on load, so a resumed run continues the same sequence.
    """

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        distribution: Literal["normal", "uniform", "dirichlet"] = "normal",
        seed: Seed = 0,
    ):
        super().__init__(task_names, task_weights)
        self.distribution = distribution
        self._gen = torch.Generator()
        self._gen.manual_seed(int(seed))
        self.register_buffer("rng_state", self._gen.get_state())

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.rng_state.copy_(self._gen.get_state())  # only when a state_dict is taken
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "rng_state"
        if key in state_dict:
            self._gen.set_state(state_dict[key].detach().to("cpu", torch.uint8).clone())

    def _sample(self, device: torch.device) -> Tensor:
        n = len(self.task_names)
        if self.distribution == "normal":
            x = torch.randn(n, generator=self._gen)
        elif self.distribution == "uniform":
            x = torch.rand(n, generator=self._gen)
        else:
            x = torch.empty(n).exponential_(1.0, generator=self._gen)
        if device.type == "cuda":  # pinned + non_blocking: no host sync on the hot path
            return x.pin_memory().to(device, non_blocking=True)
        return x.to(device)

    def weights(self, losses: Tensor, present: Tensor | None = None) -> Tensor:
        x = self._sample(losses.device)
        p = present_mask(losses, present)
        if self.distribution == "dirichlet":
            w = x * p / (x * p).sum()
        else:
            w = torch.softmax(torch.where(p > 0, x, torch.full_like(x, -torch.inf)), 0)
        return w
