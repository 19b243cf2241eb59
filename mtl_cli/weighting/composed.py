"""A loss transform followed by a gradient aggregator: ``weighting=composed`` with
``transform`` (how each task loss is rewritten first) and ``aggregator`` (any gradient-based
method node, with its own keys). The aggregator then works on the gradients of the transformed
losses, e.g. log losses under MGDA (scale-invariant gradients, as in DB-MTL's first step):

    mtl-train weighting=composed weighting.transform=log weighting.aggregator.name=mgda

Transforms (per task t):

- ``none``: L_t.
- ``static``: w_t L_t with ``tasks.<name>.weight``.
- ``log``: log(L_t + eps) (the scale-invariant loss ``si``).
- ``uw``: exp(-s_t) L_t + s_t with learnable log-variances s_t (Kendall et al. 2018).
- ``imtl_l``: exp(s_t) L_t - s_t with learnable scales s_t (Liu et al. 2021).

Learnable transform parameters are trained by the main optimizer (their own parameter group):
they receive the gradient of the sum of the transformed losses, like the task heads.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..errors import Problem
from ..registry import WEIGHTINGS
from .base import BackwardContext, Weighting

TRANSFORMS = ("none", "static", "log", "uw", "imtl_l")


@WEIGHTINGS.register("composed")
class Composed(Weighting):
    requires = frozenset({"losses", "grads"})

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        transform: str = "log",
        aggregator: dict | None = None,
        eps: float = 1e-8,
    ):
        super().__init__(task_names, task_weights)
        if transform not in TRANSFORMS:
            raise ValueError(f"weighting.transform={transform!r} not in {TRANSFORMS}")
        node = dict(aggregator or {"name": "mgda"})
        cls = WEIGHTINGS.get(node.pop("name"))
        self.aggregator = cls(task_names, task_weights, **node)
        self.transform, self.eps = transform, eps
        self.scales = nn.Parameter(torch.zeros(len(task_names))) if transform in ("uw", "imtl_l") else None

    def transformed(self, losses: Tensor) -> Tensor:
        L = losses.float()
        if self.transform == "static":
            return self.task_weights * L
        if self.transform == "log":
            return torch.log(L + self.eps)
        if self.transform == "uw":
            return torch.exp(-self.scales) * L + self.scales
        if self.transform == "imtl_l":
            return torch.exp(self.scales) * L - self.scales
        return L

    def backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        t = self.transformed(losses)
        if ctx.present is not None:
            t = t * ctx.present  # absent tasks: an exact 0, as their loss
        own = [self.scales] if self.scales is not None else []
        if own:
            outer = ctx.backward

            def backward(total, inputs=None):
                outer(total, inputs=None if inputs is None else [*inputs, *own])

            ctx = dataclasses.replace(ctx, backward=backward)
        return self.aggregator.backward(t, ctx)

    @classmethod
    def check(cls, node: dict, arch_cls: type) -> list:
        from ..config.checks import component_problems
        from .engine import GradientWeighting

        agg = node.get("aggregator") or {"name": "mgda"}
        out = component_problems("weighting.aggregator", agg, WEIGHTINGS)
        if out:
            return out
        agg_cls = WEIGHTINGS.get(agg["name"])
        if not issubclass(agg_cls, GradientWeighting):
            names = [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), GradientWeighting)]
            return [
                Problem(
                    "weighting.aggregator.name",
                    "the aggregator must be a gradient-based method",
                    agg["name"],
                    ", ".join(names),
                    "choose a gradient method, e.g. mgda",
                )
            ]
        if node.get("transform", "log") not in TRANSFORMS:
            out.append(
                Problem(
                    "weighting.transform",
                    "unknown transform",
                    node.get("transform"),
                    ", ".join(TRANSFORMS),
                    "set weighting.transform=log",
                )
            )
        return out + [
            dataclasses.replace(p, key=p.key.replace("weighting.", "weighting.aggregator.", 1))
            for p in agg_cls.check(agg, arch_cls)
        ]
