"""A loss transform followed by a gradient aggregator: ``weighting=composed`` with ``transform``
(a loss method that is a sum of per-task transformed losses: ``si`` (log), ``uw``, ``imtl_l``; or
``none``) and ``aggregator`` (any gradient-based method node, with its own keys). The aggregator
works on the gradients of the transformed losses, e.g. log losses under MGDA (scale-invariant
gradients, as in DB-MTL's first step):

    mtl-train weighting=composed weighting.transform=si weighting.aggregator.name=mgda

The transform is the loss method's own code (:class:`~mtl_cli.weighting.base.LossTransform`), not a
copy. Its learnable parameters (UW's log-variances, IMTL-L's scales) are trained by the main
optimizer (their own parameter group): they receive the gradient of the sum of the transformed
losses, like the task heads. The logged weights are the effective weights on the raw losses: the
aggregator's weight on a transformed loss times the transform's derivative.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Callable

from torch import Tensor

from ..config.checks import component_problems
from ..config.params import Check
from ..errors import Problem
from ..registry import WEIGHTINGS
from .base import BackwardContext, LossTransform, Weighting
from .engine import GradientWeighting


def _transforms() -> list[str]:
    return ["none"] + [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), LossTransform)]


def _gradient_methods() -> list[str]:
    return [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), GradientWeighting)]


def backward_through(
    transformer: LossTransform,
    losses: Tensor,
    ctx: BackwardContext,
    inner: Callable[[Tensor, BackwardContext], Tensor],
) -> Tensor:
    """``inner(transformed losses, ctx)``, with the transform's own parameters receiving the gradient
    of the transformed losses' sum (as the heads do); returns the weights on the raw losses."""
    t = transformer.transform(losses)
    if ctx.present is not None:
        t = t * ctx.present  # absent tasks: an exact 0, as their loss
    own = [p for p in transformer.parameters() if p.requires_grad]
    if own:
        outer = ctx.backward

        def backward(total, inputs=None):
            outer(total, inputs=None if inputs is None else [*inputs, *own])

        ctx = dataclasses.replace(ctx, backward=backward)
    w = inner(t, ctx)
    return w * transformer.weights(losses.detach(), ctx.present).to(w.dtype)


@WEIGHTINGS.register("composed")
class Composed(Weighting):
    requires = frozenset({"losses", "grads"})

    def __init__(
        self,
        task_names: list[str],
        task_weights: list[float],
        *,
        transform: Annotated[str, Check(lambda v: v in _transforms(), lambda: " or ".join(_transforms()))] = "si",
        aggregator: dict | None = None,
    ):
        super().__init__(task_names, task_weights)
        ones = [1.0] * len(task_names)
        node = dict(aggregator or {"name": "mgda"})
        self.aggregator = WEIGHTINGS.get(node.pop("name"))(task_names, ones, **node)
        self.transform = transform
        self.transformer = None if transform == "none" else WEIGHTINGS.get(transform)(task_names, ones)

    def weighted_backward(self, losses: Tensor, ctx: BackwardContext) -> Tensor:
        if self.transformer is None:
            return self.aggregator.weighted_backward(losses, ctx)
        return backward_through(self.transformer, losses, ctx, self.aggregator.weighted_backward)

    def data_parallel_problems(self) -> list:
        return [
            dataclasses.replace(p, key=p.key.replace("weighting.", "weighting.aggregator.", 1))
            for p in self.aggregator.data_parallel_problems()
        ]

    def on_step_end(self, step: int) -> None:
        self.aggregator.on_step_end(step)

    def on_epoch_end(self, epoch: int) -> None:
        self.aggregator.on_epoch_end(epoch)

    @classmethod
    def check(cls, node: dict, arch_cls: type, task_names: list[str]) -> list:
        agg = node.get("aggregator") or {"name": "mgda"}
        out = component_problems("weighting.aggregator", agg, WEIGHTINGS)
        if out:
            return out
        agg_cls = WEIGHTINGS.get(agg["name"])
        if not issubclass(agg_cls, GradientWeighting):
            return [
                Problem(
                    "weighting.aggregator.name",
                    "the aggregator must be a gradient-based method",
                    agg["name"],
                    ", ".join(_gradient_methods()),
                    "choose a gradient method, e.g. mgda",
                )
            ]
        return [
            dataclasses.replace(p, key=p.key.replace("weighting.", "weighting.aggregator.", 1))
            for p in agg_cls.check(agg, arch_cls, task_names)
        ]

    @classmethod
    def ignores_task_weights(cls, node: dict) -> bool:
        if node.get("transform", "si") == "none":
            agg = node.get("aggregator") or {"name": "mgda"}
            name = agg.get("name")
            return name in WEIGHTINGS and WEIGHTINGS.get(name).ignores_task_weights(agg)
        transform = node.get("transform", "si")
        return transform in WEIGHTINGS and WEIGHTINGS.get(transform).ignores_task_weights({})
