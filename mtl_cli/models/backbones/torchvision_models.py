"""Any torchvision classification model by name, cut before its global pooling, so that it
returns a feature map (for dense heads) and exposes its top-level stages.

``weights``: null (random init), a path to a local state-dict file (``.pt``/``.pth``; keys of
the full torchvision model), or a torchvision weights name such as ``DEFAULT`` (downloads unless
the file is already in the torch hub cache). Inputs with other than 3 channels pass through a
1x1 convolution first (grayscale is repeated instead, so pretrained weights stay meaningful).
"""

from __future__ import annotations

import os
from typing import Annotated

import torch
from torch import Tensor, nn

from ...config.params import Check
from ...data.base import InputSpec
from ...errors import ConfigError, Problem
from ...registry import BACKBONES
from ..base import Backbone, checked_stages, group_stages, node_values, probe_shape

_POOL_NAMES = ("avgpool", "global_pool", "pool")


def _last_feature_node(model: nn.Module) -> str:
    """The graph node just before the model's global pooling."""
    from torchvision.models.feature_extraction import get_graph_node_names

    nodes = get_graph_node_names(model)[1]
    for i, n in enumerate(nodes):
        if n in _POOL_NAMES and i > 0:
            return nodes[i - 1]
    raise ValueError("could not find the global pooling node of this model")


def _model_names() -> list[str]:
    import torchvision  # imported here: torchvision.models takes seconds to import

    return torchvision.models.list_models(module=torchvision.models)


def _is_model(name: str) -> bool:
    return name in _model_names()


def _is_file_name(weights: str) -> bool:
    """Is ``weights`` meant as a state-dict file (an existing path, or a .pt/.pth name)?"""
    return os.path.exists(weights) or weights.endswith((".pt", ".pth"))


def _weights_of(model: str, weights: str) -> bool:
    """Is ``weights`` (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet18_Weights.IMAGENET1K_V1``) a
    weights name of ``model``?"""
    import torchvision

    if weights == "DEFAULT":
        return True
    enum, _, member = weights.rpartition(".")
    w = torchvision.models.get_model_weights(model)
    return member in w.__members__ and enum in ("", w.__name__)


def _weights_ok(weights: str) -> bool:
    """An existing state-dict file, or a weights name of some torchvision model (that it is one
    of the configured model's is :meth:`TorchvisionBackbone.check`'s rule)."""
    if _is_file_name(weights):
        return os.path.isfile(weights)
    return any(_weights_of(m, weights) for m in _model_names())


MODEL = Check(
    _is_model,
    "naming a torchvision classification model (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...: "
    "torchvision.models.list_models(module=torchvision.models))",
)
WEIGHTS = Check(
    _weights_ok,
    "that is an existing .pt/.pth state-dict file (relative to the current directory) or a torchvision weights "
    "name (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1, ...)",
)


def _load_weights(name: str, weights: str | None) -> nn.Module:
    import torchvision  # imported here: torchvision.models takes seconds to import

    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    if _is_file_name(weights):
        model = torchvision.models.get_model(name, weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        return model
    return torchvision.models.get_model(name, weights=weights)


class _Adapt(nn.Module):
    """Input adaptation: grayscale repeated to 3 channels, other channel counts through a 1x1 conv."""

    def __init__(self, repeat: bool, conv: nn.Module):
        super().__init__()
        self.repeat = repeat
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x.expand(-1, 3, -1, -1) if self.repeat else x)


@BACKBONES.register("torchvision")
class TorchvisionBackbone(Backbone):
    """Stages: the model's top-level modules before its pooling (a lone Sequential such as
    ``features`` is opened up); a module without convolution or linear layers (BN, ReLU, max
    pool) joins the stage before it, so ResNet gives stem, layer1..layer4. ``stages()`` checks
    on a probe input that running them in order equals the model, and refuses models whose
    forward is not such a sequence."""

    feature_map = True
    has_stages = True
    modalities = ("image",)

    def __init__(
        self,
        input_spec: InputSpec,
        *,
        model: Annotated[str, MODEL] = "resnet18",
        weights: Annotated[str, WEIGHTS] | None = None,
    ):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        problems = self.check({"model": model, "weights": weights}, input_spec)
        if problems:
            raise ConfigError(problems)
        net = _load_weights(model, weights)
        self.node = _last_feature_node(net)
        self.body = create_feature_extractor(net, return_nodes={self.node: "out"})
        # the original module tree (not registered: its leaf modules are the same objects as the
        # body's, and fx flattens containers such as ResNet's layer1 into plain Modules)
        self._tree = [net]
        c = input_spec.shape[0]
        self.adapt = _Adapt(c == 1, nn.Identity() if c in (1, 3) else nn.Conv2d(c, 3, 1))
        self.model_name = model
        self.in_shape = tuple(input_spec.shape)
        self.out_shape = probe_shape(self, self.in_shape)

    @classmethod
    def check(cls, node: dict, input_spec: InputSpec) -> list:
        """Weights given by name must be weights of the model."""
        v = node_values(cls, node)
        model, weights = v["model"], v["weights"]
        if not (isinstance(model, str) and isinstance(weights, str)) or _is_file_name(weights):
            return []
        if not _is_model(model) or not _weights_ok(weights) or _weights_of(model, weights):
            return []  # (a bad model or weights name alone: the annotations' problems)
        import torchvision

        names = dict.fromkeys(["DEFAULT", *torchvision.models.get_model_weights(model).__members__])
        return [
            Problem(
                "backbone.weights",
                f"not weights of {model}",
                weights,
                ", ".join(names),
                f"choose weights of {model}, a .pt/.pth state-dict file, or null",
            )
        ]

    def _stage_modules(self) -> list[tuple[str, nn.Module]]:
        top = []
        for n, m in self._tree[0].named_children():
            if n in ("fc", "classifier", *_POOL_NAMES):
                break
            top.append((n, m))
        if len(top) == 1 and isinstance(top[0][1], nn.Sequential):
            top = [(f"{top[0][0]}.{n}", m) for n, m in top[0][1].named_children()]
        return group_stages(top)

    def stages(self) -> list[tuple[str, nn.Module]]:
        named = self._stage_modules()
        if named:
            first_name, first = named[0]
            named[0] = (first_name, nn.Sequential(self.adapt, first))
        return checked_stages(
            self,
            named,
            self.in_shape,
            what="torchvision",
            allowed="resnet*, resnext*, wide_resnet*, mobilenet_v2/v3, efficientnet*, convnext*, regnet*, vgg*",
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.adapt(x))["out"]
