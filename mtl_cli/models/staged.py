"""Helpers for architectures that work stage by stage on a backbone (cross-stitch, NDDR, MTAN,
mixtures of experts).

A backbone with ``has_stages`` cuts into named stages (``Backbone.stages()``). Features between
stages have one of three per-sample forms, and the helpers here work on all of them, so one
architecture serves images (small_cnn, any sequential torchvision CNN), 1-D signals (signal_cnn)
and tabular data (mlp):

- ``(C, H, W)`` image maps, ``(C, L)`` signal maps, ``(D,)`` vectors.

``pointwise`` is the "1x1" layer of each form (Conv2d, Conv1d or Linear), ``norm`` its batch
norm, ``resize`` matches the spatial size of another map, and ``Gate`` is a softmax gate over
experts computed from globally pooled features (never from a flattened raw input, so no input
size has to be declared).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import InputSpec
from .base import Backbone, pool, pooled_dim, probe_shape


class Staged(nn.Module):
    """One backbone as a ModuleList of stages with the per-sample output shape of each."""

    def __init__(self, backbone: Backbone, in_shape: tuple[int, ...]):
        super().__init__()
        named = backbone.stages()
        self.names = [n for n, _ in named]
        self.stages = nn.ModuleList(m for _, m in named)
        shapes, shape = [], tuple(in_shape)
        for m in self.stages:
            shape = probe_shape(m, shape)
            shapes.append(shape)
        self.shapes: list[tuple[int, ...]] = shapes

    def __len__(self) -> int:
        return len(self.stages)

    def run(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        for m in self.stages[start:stop]:
            x = m(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)


def make_staged(make_backbone, spec: InputSpec) -> Staged:
    """A fresh backbone (its own parameters) for ``spec``, cut into stages."""
    return Staged(make_backbone(spec), tuple(spec.shape))


def pointwise(c_in: int, c_out: int, shape: tuple[int, ...], bias: bool = True) -> nn.Module:
    """The 1x1 layer for features of per-sample ``shape``: Conv2d, Conv1d or Linear."""
    if len(shape) == 3:
        return nn.Conv2d(c_in, c_out, 1, bias=bias)
    if len(shape) == 2:
        return nn.Conv1d(c_in, c_out, 1, bias=bias)
    return nn.Linear(c_in, c_out, bias=bias)


def norm(c: int, shape: tuple[int, ...]) -> nn.Module:
    """Batch norm for features of per-sample ``shape``."""
    return nn.BatchNorm2d(c) if len(shape) == 3 else nn.BatchNorm1d(c)


def channels(shape: tuple[int, ...]) -> int:
    """Channel (or feature) count of per-sample ``shape``."""
    return shape[0] if len(shape) >= 2 else int(shape[0])


def resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    """``x`` [B, C, *s] average-pooled (or interpolated, when smaller) to spatial ``size``."""
    if x.dim() <= 2 or tuple(x.shape[2:]) == tuple(size):
        return x
    if all(a >= b for a, b in zip(x.shape[2:], size)):
        return F.adaptive_avg_pool2d(x, size) if x.dim() == 4 else F.adaptive_avg_pool1d(x, size)
    mode = "bilinear" if x.dim() == 4 else "linear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class Gate(nn.Module):
    """Softmax weights over ``n`` experts from globally pooled features of per-sample ``shape``."""

    def __init__(self, shape: tuple[int, ...], n: int):
        super().__init__()
        self.fc = nn.Linear(pooled_dim(shape), n)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.fc(pool(x)), dim=-1)


def mix(weights: Tensor, experts: list[Tensor]) -> Tensor:
    """Per-sample weighted sum of expert outputs: weights [B, E], experts E x [B, ...]."""
    stacked = torch.stack(experts, dim=1)  # [B, E, ...]
    w = weights.reshape(*weights.shape, *([1] * (stacked.dim() - 2)))
    return (w.to(stacked.dtype) * stacked).sum(dim=1)


class PerInputBatchNorm(nn.Module):
    """A batch norm with one set of running statistics per input (``index`` selects it) and one
    shared weight and bias. Layers shared by inputs from different datasets would otherwise
    evaluate every input with statistics averaged over all of them (domain-specific batch norm:
    Chang et al., CVPR 2019; Bilen & Vedaldi 2017 "Universal representations")."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, n: int):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias  # the same Parameters: still one shared tensor
        self.eps, self.momentum = bn.eps, bn.momentum
        self.track = bn.track_running_stats
        self.n = n
        self.index = 0
        for i in range(n):
            self.register_buffer(f"running_mean_{i}", bn.running_mean.clone() if self.track else None)
            self.register_buffer(f"running_var_{i}", bn.running_var.clone() if self.track else None)
            self.register_buffer(f"num_batches_tracked_{i}", torch.zeros((), dtype=torch.long) if self.track else None)

    def forward(self, x: Tensor) -> Tensor:
        i = self.index
        mean, var = getattr(self, f"running_mean_{i}"), getattr(self, f"running_var_{i}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track:
            count = getattr(self, f"num_batches_tracked_{i}")
            count.add_(1)
            if self.momentum is None:  # cumulative average, as torch's batch norm does
                factor = 1.0 / float(count)
        use_batch = self.training or not self.track
        return F.batch_norm(
            x,
            mean if not self.training or self.track else None,
            var if not self.training or self.track else None,
            self.weight,
            self.bias,
            use_batch,
            factor,
            self.eps,
        )


def per_input_norms(module: nn.Module, n: int) -> list[PerInputBatchNorm]:
    """Replace every batch norm inside ``module`` by a :class:`PerInputBatchNorm` for ``n``
    inputs (in place); returns the new modules, whose ``index`` the caller sets per input."""
    out = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = PerInputBatchNorm(child, n)
            setattr(module, name, new)
            out.append(new)
        else:
            out += per_input_norms(child, n)
    return out
