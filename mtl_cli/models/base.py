"""Model contracts: backbones, heads and architectures.

Config keys of a component are the *keyword-only* arguments of its class (after ``*``); the
positional arguments are context the builder supplies (input shape, output size, ...). The
validator checks config nodes against those keyword-only arguments, so a component documents and
enforces its keys by its signature alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ..data.base import InputSpec
from ..tasks.base import Task


class Backbone(nn.Module):
    """Maps one input to features: a map [B, C, h, w] (``feature_map``) or a vector [B, D]."""

    feature_map: bool = True  # class attribute: does forward return a spatial map?
    out_shape: tuple[int, ...]  # per sample, set by __init__

    def stage_names(self) -> list[str]:
        """Names of successive stages, for soft-sharing architectures."""
        return []


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
    make_backbone: Callable[[InputSpec], Backbone]
    make_head: Callable[[Task, tuple[int, ...]], Head]


class MTLModel(nn.Module):
    """Interface every architecture implements.

    ``forward(inputs) -> {task: prediction}`` is ``decode(encode(inputs))``. ``encode`` returns the
    shared representation that gradient methods differentiate against; ``decode`` applies the
    task-specific parts. ``shared_parameters`` and ``task_parameters`` partition the parameters.
    """

    single_input: bool = True  # class attribute: all tasks read the same input key

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
    """Global average pool a map [B, C, h, w] to [B, C]; vectors pass through."""
    return x.mean(dim=(-2, -1)) if x.dim() == 4 else x.flatten(1)


@torch.no_grad()
def probe_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for inputs of per-sample shape ``in_shape``."""
    was_training = module.training
    module.eval()
    out = module(torch.zeros(2, *in_shape))
    module.train(was_training)
    return tuple(out.shape[1:])
