"""``trainer.ema``: an exponential moving average of the model's weights, kept on the device and
updated after every optimizer step with no host read (a step masked by ``on_nonfinite=skip``
leaves it as it was). Evaluations, and the ``model`` of every checkpoint, use the averaged
weights; a checkpoint also keeps the training weights (``ema.raw``) so that a resumed run goes on
exactly as the uninterrupted one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class WeightEMA:
    """The average of every floating tensor of ``model.state_dict()`` (parameters and buffers such
    as BatchNorm statistics); other tensors (counters) are the model's own.

    ``decay``: the weight of the average at each update; with ``warmup`` the decay of update ``n``
    (from 0) is ``min(decay, (1 + n) / (10 + n))``, so early averages are not dominated by the
    initial weights."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.model, self.decay, self.warmup = model, decay, warmup
        live = model.state_dict(keep_vars=True)
        self.names = [k for k, v in live.items() if v.is_floating_point()]
        self.live = [live[k].detach() for k in self.names]
        self.shadow = [t.clone() for t in self.live]
        self.updates = 0

    def decay_at(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, skipped: Tensor | None = None) -> None:
        """shadow += (1 - decay) (weights - shadow); nothing where ``skipped`` (a 0-dim bool on the
        device) is set."""
        w = 1.0 - self.decay_at(self.updates)
        self.updates += 1
        diff = torch._foreach_sub(self.live, self.shadow)
        if skipped is None or not diff:
            torch._foreach_mul_(diff, w)
        else:
            torch._foreach_mul_(diff, torch.where(skipped, 0.0, w))
        torch._foreach_add_(self.shadow, diff)

    def averaged_state(self) -> dict[str, Tensor]:
        """``model.state_dict()`` with the averaged tensors in place of the floating ones."""
        out = dict(self.model.state_dict())
        out.update({k: s.detach().clone() for k, s in zip(self.names, self.shadow)})
        return out

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside (evaluation), its own ones after."""
        kept = [t.clone() for t in self.live]
        for t, s in zip(self.live, self.shadow):
            t.copy_(s)
        try:
            yield
        finally:
            for t, k in zip(self.live, kept):
                t.copy_(k)

    def state_dict(self) -> dict:
        """What a checkpoint keeps beside the averaged ``model``: the training weights, the count."""
        return {"raw": dict(self.model.state_dict()), "updates": self.updates}

    @torch.no_grad()
    def load(self, averaged: dict[str, Tensor], state: dict) -> None:
        """From a checkpoint: ``averaged`` its ``model`` (the training weights are loaded into the
        model by the trainer), ``state`` its ``ema``."""
        for k, s in zip(self.names, self.shadow):
            s.copy_(averaged[k])
        self.updates = int(state["updates"])
