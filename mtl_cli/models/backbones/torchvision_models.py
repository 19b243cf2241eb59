"""Any torchvision classification model by name, cut before its global pooling, so that it
returns a feature map (for dense heads) and exposes its top-level stages.

``weights``: null (random init), a path to a local state-dict file (``.pt``/``.pth``; keys of
the full torchvision model), or a torchvision weights name such as ``DEFAULT`` (downloads unless
the file is already in the torch hub cache). Inputs with other than 3 channels pass through a
1x1 convolution first (grayscale is repeated instead, so pretrained weights stay meaningful).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ...data.base import InputSpec
from ...errors import ConfigError, Problem
from ...registry import BACKBONES
from ..base import Backbone, probe_shape

_POOL_NAMES = ("avgpool", "global_pool", "pool")


def _last_feature_node(model: nn.Module) -> str:
    """The graph node just before the model's global pooling."""
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(model)[1]
    for i, n in enumerate(nodes):
        if n in _POOL_NAMES and i > 0:
            return nodes[i - 1]
    raise ValueError("could not find the global pooling node of this model")


def _load_weights(name: str, weights: str | None) -> nn.Module:
    import torchvision  # imported here: torchvision.models takes seconds to import

    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    if os.path.exists(weights) or weights.endswith((".pt", ".pth")):
        if not os.path.exists(weights):
            raise ConfigError([Problem("backbone.weights", "weights file not found", os.path.abspath(weights),
                                       fix="give an existing .pt/.pth state-dict file, or weights=null")])
        model = torchvision.models.get_model(name, weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        return model
    return torchvision.models.get_model(name, weights=weights)


@BACKBONES.register("torchvision")
class TorchvisionBackbone(Backbone):
    feature_map = True

    def __init__(self, input_spec: InputSpec, *, model: str = "resnet18", weights: str | None = None):
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        available = torchvision.models.list_models(module=torchvision.models)
        if model not in available:
            raise ConfigError([Problem("backbone.model", "unknown torchvision model", model,
                                       allowed=", ".join(available[:40]) + ", ...",
                                       fix="pick a classification model from torchvision.models.list_models()")])
        net = _load_weights(model, weights)
        self.node = _last_feature_node(net)
        self.body = create_feature_extractor(net, return_nodes={self.node: "out"})
        c = input_spec.shape[0]
        self.repeat = c == 1
        self.adapt = nn.Identity() if c in (1, 3) else nn.Conv2d(c, 3, 1)
        self._stages = [n for n, _ in net.named_children() if n not in ("fc", "classifier", *_POOL_NAMES)]
        self.out_shape = probe_shape(self, tuple(input_spec.shape))

    def stage_names(self) -> list[str]:
        return list(self._stages)

    def forward(self, x: Tensor) -> Tensor:
        if self.repeat:
            x = x.expand(-1, 3, -1, -1)
        return self.body(self.adapt(x))["out"]
