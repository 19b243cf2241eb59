"""A multi-layer perceptron for tabular (or flattened) inputs: Linear-[norm]-activation-dropout.

``hidden=[]`` has no layer at all: the flattened input goes to the heads, so with linear heads each
task is a linear (or logistic) model of the input, the linear single-task reference of
``baseline=stl backbone=mlp 'backbone.hidden=[]'``. Such a model shares no parameters, and the
gradient weighting methods refuse it (``Weighting.model_problems``)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from torch import Tensor, nn

from ...config.params import Dropout, Len, PosInt
from ...data.base import InputSpec
from ...registry import BACKBONES
from ..base import Backbone

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


@BACKBONES.register("mlp")
class MLP(Backbone):
    feature_map = False
    has_stages = True

    def __init__(
        self,
        input_spec: InputSpec,
        *,
        hidden: Annotated[list[PosInt], Len(min=0)] = (256, 128),  # []: no layer, the heads read the input
        activation: Literal["relu", "gelu", "silu", "tanh"] = "relu",
        dropout: Dropout = 0.0,
        layer_norm: bool = False,
    ):
        super().__init__()
        d = int(math.prod(input_spec.shape))
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        self.net = nn.Sequential(*layers)
        self.out_shape = (d,)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """One stage per hidden layer (Linear with its norm, activation and dropout)."""
        groups: list[list[nn.Module]] = []
        for m in self.net:
            if isinstance(m, nn.Linear) or not groups:
                groups.append([])
            groups[-1].append(m)
        if len(groups) > 1 and all(isinstance(m, nn.Flatten) for m in groups[0]):
            groups[1] = groups[0] + groups[1]  # Flatten joins the first layer
            groups = groups[1:]
        return [(f"layer{i + 1}", nn.Sequential(*g)) for i, g in enumerate(groups)]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
