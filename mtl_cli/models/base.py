"""Model contracts: backbones, heads and architectures.

Config keys of a component are the *keyword-only* arguments of its class (after ``*``); the
positional arguments are context the builder supplies (input shape, output size, ...). The
validator checks config nodes against those keyword-only arguments, so a component documents and
enforces its keys by its signature alone.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..config.typecheck import config_params
from ..data.base import InputSpec
from ..tasks.base import Task


class Backbone(nn.Module):
    """Maps one input to features: a map [B, C, h, w] or [B, C, L] (``feature_map``) or a vector
    [B, D].

    Backbones that can be cut into successive stages (``has_stages``) implement ``stages()``:
    named modules whose composition ``stage_n(... stage_1(x))`` equals ``forward(x)``.
    Soft-sharing architectures (cross-stitch, MTAN, experts) run those stages one at a time and
    connect tasks between them; ``mtl_cli.models.staged`` has the shared helpers.
    """

    feature_map: bool = True  # class attribute: does forward return a spatial map?
    has_stages: bool = False  # class attribute: does stages() cut this backbone into stages?
    modalities: tuple[str, ...] = ("image", "signal", "tabular")  # class attribute: inputs it reads
    out_shape: tuple[int, ...]  # per sample, set by __init__

    @classmethod
    def check(cls, node: dict, input_spec: InputSpec) -> list:
        """Problems (``mtl_cli.errors.Problem``) of this ``backbone`` config node on an input of
        ``input_spec``, for rules between keys or with the input that the keys' annotations
        cannot state (each key's own domain is its annotation's); none by default. The
        constructor raises them too; validation may ask first."""
        return []

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Successive (name, module) stages whose composition is ``forward``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be cut into stages")


def node_values(cls: type, node: dict) -> dict:
    """A component's keys: the node's values over the defaults of its config keys."""
    defaults = {k: d for k, (_, d) in config_params(cls).items() if d is not inspect.Parameter.empty}
    return defaults | {k: v for k, v in node.items() if k != "name"}


class Head(nn.Module):
    """Maps shared features to one task's prediction.

    Heads that pool their input first (``pools_input``) receive the pooled [B, C] features from
    :class:`HeadRunner`, computed once for all of them. Heads with equal, non-None ``fuse_key()``
    may run as one batched call, ``type(head).forward_fused(heads, x)``; each keeps its own
    parameters, so the per-task parameter split is unchanged.
    """

    needs_feature_map: bool = False  # class attribute: needs [B, C, h, w] input
    dense_output: bool = False  # class attribute: predicts per pixel [B, K, H, W]
    pools_input: bool = False  # class attribute: forward starts with pool(x)

    def fuse_key(self) -> tuple | None:
        return None

    @staticmethod
    def forward_fused(heads: list[Head], x: Tensor) -> list[Tensor]:
        raise NotImplementedError


class HeadRunner:
    """Applies a ModuleDict of heads to one shared representation, cheaply for many tasks:
    global pooling once for every pooling head, and one batched call per group of fusable heads
    (e.g. 40 linear heads become one matmul instead of 40)."""

    def __init__(self, heads: nn.ModuleDict):
        self.heads = heads
        groups: dict[tuple, list[str]] = {}
        for name, head in heads.items():
            key = head.fuse_key()
            groups.setdefault((type(head), key) if key is not None else (name,), []).append(name)
        self.groups = list(groups.values())

    def __call__(self, rep: Tensor) -> dict[str, Tensor]:
        pooled = None
        out: dict[str, Tensor] = {}
        for names in self.groups:
            first = self.heads[names[0]]
            x = rep
            if first.pools_input:
                pooled = pool(rep) if pooled is None else pooled
                x = pooled
            if len(names) == 1:
                out[names[0]] = first(x)
            else:
                for n, y in zip(names, type(first).forward_fused([self.heads[n] for n in names], x)):
                    out[n] = y
        return {n: out[n] for n in self.heads}  # task order


@dataclass
class ModelContext:
    """What an architecture needs to build itself, without reading config."""

    tasks: list[Task]
    inputs: dict[str, InputSpec]
    # a fresh backbone for an input: the configured `backbone`, or the given {name: ..., keys} node
    make_backbone: Callable[..., Backbone]
    make_head: Callable[[Task, tuple[int, ...]], Head]


@dataclass
class ArchInfo:
    """What validation knows when it asks an architecture class to check its config node."""

    task_names: list[str]
    backbone: str  # the backbone's registered name
    stages: list[str] | None  # stage names of the backbone on the tasks' input; None: not stageable
    inputs: dict[str, InputSpec]  # input key -> spec, for the inputs the enabled tasks read


class MTLModel(nn.Module):
    """Interface every architecture implements.

    ``forward(inputs) -> {task: prediction}`` is ``decode(encode(inputs))``. ``encode`` returns the
    representation the heads read: one tensor shared by every task (``shared_representation``),
    or a dict ``{task: tensor}`` when each task has its own (soft sharing, experts) or
    ``{input key: tensor}`` for multi-input models. ``decode`` applies the task-specific parts
    and predicts only the tasks whose inputs are present. ``shared_parameters`` and
    ``task_parameters`` partition the parameters.

    Class attributes tell generic code (validation, tests, gradient methods) what to expect:
    ``single_input`` (every task reads one input key), ``needs_stages`` (the backbone must cut
    into stages) and ``shared_representation``. ``mixes_task_parameters`` says whether a task's
    own parameters may get gradient from another task's loss (cross-stitch units do mix
    columns; hard sharing never does). ``check`` lets an architecture refuse a config at
    validation (expert counts, stage indices) with problems that name its keys.
    """

    single_input: bool = True  # class attribute: all tasks read the same input key
    needs_stages: bool = False  # class attribute: the backbone must have stages()
    shared_representation: bool = True  # class attribute: encode() returns one tensor for all tasks
    mixes_task_parameters: bool = False  # (may be set per instance) see the class docstring

    @classmethod
    def check(cls, node: dict, info: ArchInfo) -> list:
        """Problems (``mtl_cli.errors.Problem``) with this ``arch`` config node; none by default."""
        return []

    def __init__(self, task_names: list[str]):
        super().__init__()
        self.task_names = list(task_names)

    def encode(self, inputs: dict[str, Tensor]) -> Any:
        raise NotImplementedError

    def decode(self, rep: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.decode(self.encode(inputs))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, int]:
        """Number of parameters that are shared and that belong to each task."""
        out = {"shared": sum(p.numel() for p in self.shared_parameters())}
        for t in self.task_names:
            out[t] = sum(p.numel() for p in self.task_parameters(t))
        return out


def pool(x: Tensor) -> Tensor:
    """Global average pool a map [B, C, h, w] or [B, C, L] to [B, C]; vectors pass through."""
    if x.dim() == 4:
        return x.mean(dim=(-2, -1))
    return x.mean(dim=-1) if x.dim() == 3 else x.flatten(1)


def pooled_dim(shape: tuple[int, ...]) -> int:
    """Width of ``pool`` applied to features of per-sample ``shape``."""
    return shape[0] if len(shape) >= 2 else int(math.prod(shape))


@torch.no_grad()
def probe_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for inputs of per-sample shape ``in_shape``."""
    was_training = module.training
    module.eval()
    out = module(torch.zeros(2, *in_shape))
    module.train(was_training)
    return tuple(out.shape[1:])


def group_stages(top: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Stages of a pretrained model from its top-level ``(name, module)`` list: a module without
    convolution or linear layers (norm, activation, pooling) joins the stage before it."""
    groups: list[tuple[str, list[nn.Module]]] = []
    for n, m in top:
        if not groups or any(isinstance(x, (nn.Conv2d, nn.Linear)) for x in m.modules()):
            groups.append((n, [m]))
        else:
            groups[-1][1].append(m)
    return [(n, ms[0] if len(ms) == 1 else nn.Sequential(*ms)) for n, ms in groups]


@torch.no_grad()
def checked_stages(
    backbone: nn.Module, named: list[tuple[str, nn.Module]], in_shape: tuple[int, ...], *, what: str, allowed: str
) -> list[tuple[str, nn.Module]]:
    """``named`` when running its stages in order equals ``backbone`` on a probe input; else a
    config error on ``backbone.model`` (``what``: the kind of model; ``allowed``: models that are
    such a sequence)."""
    from ..errors import ConfigError, Problem

    was = backbone.training
    backbone.eval()
    x = torch.randn(2, *in_shape, generator=torch.Generator().manual_seed(0))
    ref = backbone(x)
    y = x
    try:
        for _, m in named:
            y = m(y)
        same = y.shape == ref.shape and torch.allclose(y, ref, atol=1e-4, rtol=1e-3)
    except (RuntimeError, TypeError, ValueError):
        same = False
    backbone.train(was)
    if same:
        return named
    name = getattr(backbone, "model_name", "?")
    reason = f"this {what} model is not a plain sequence of stages, so a soft-sharing architecture cannot cut it"
    fix = "choose one of those models, or arch=hps"
    raise ConfigError([Problem("backbone.model", reason, name, allowed=allowed, fix=fix)])
