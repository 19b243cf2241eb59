"""Any timm model by name (pip install "mtl-cli[timm]"), cut before its pooling and classifier:
``forward_features`` gives the feature map (for dense heads; a transformer's tokens [N, D]
become channels first [D, N], which heads average over), and its top-level modules are the
stages that soft-sharing architectures (cross-stitch, NDDR, MTAN, experts) work on.

``weights``: null (random init) or a local file (``.pth``/``.pt``/``.bin`` state dict, or
``.safetensors``) of the full timm model, loaded by timm itself: its classifier is left out, and
for inputs with other than 3 channels timm adapts the first convolution's weights (summed for
grayscale). Nothing is downloaded: a run never reaches the network.
"""

from __future__ import annotations

import os
from typing import Annotated

from torch import Tensor, nn

from ...config.params import Check
from ...data.base import InputSpec
from ...registry import BACKBONES
from ..base import Backbone, checked_stages, group_stages, probe_shape

#: top-level modules from which on a timm model is its head (pooling, classifier)
_HEAD = ("global_pool", "head", "fc", "classifier", "head_drop", "fc_norm", "pre_logits", "flatten", "attn_pool")
#: top-level containers opened up into one stage per item
_OPEN = ("blocks", "stages", "features", "layers")
WEIGHT_FILES = (".pth", ".pt", ".bin", ".safetensors")


def _installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


def _is_model(name: str) -> bool:
    if not _installed():
        return False
    import timm

    return name in timm.list_models()


def _model_text() -> str:
    if not _installed():
        return 'naming a timm model; timm is not installed: pip install "mtl-cli[timm]"'
    return "naming a timm model (resnet18, efficientnet_b0, convnext_atto, regnetx_002, ...: timm.list_models())"


def _weights_ok(path: str) -> bool:
    return path.endswith(WEIGHT_FILES) and os.path.isfile(path)


MODEL = Check(_is_model, _model_text)
WEIGHTS = Check(
    _weights_ok,
    "that is an existing local weights file of the model (" + ", ".join(WEIGHT_FILES) + "; relative to the "
    "current directory): nothing is downloaded",
)


@BACKBONES.register("timm")
class TimmBackbone(Backbone):
    """Stages: the model's top-level modules before its head, with ``blocks``/``stages``
    containers opened up (one stage per item); a module without convolution or linear layers
    (norm, activation, pooling) joins the stage before it, so ResNet gives stem, layer1..layer4
    and EfficientNet stem, blocks.0..6, conv_head. ``stages()`` checks on a probe input that
    running them in order equals ``forward_features``, and refuses models that are no such
    sequence (vision transformers: use them with arch=hps)."""

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
        import timm

        kwargs: dict = {"num_classes": 0, "global_pool": "", "in_chans": input_spec.shape[0]}
        if weights is not None:  # timm reads the file (classifier left out, first conv adapted)
            kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": os.path.abspath(weights)}}
        self.net = timm.create_model(model, **kwargs)
        self.model_name = model
        self.in_shape = tuple(input_spec.shape)
        self.out_shape = probe_shape(self, self.in_shape)

    def _stage_modules(self) -> list[tuple[str, nn.Module]]:
        top: list[tuple[str, nn.Module]] = []
        for n, m in self.net.named_children():
            if n in _HEAD:
                break
            if n in _OPEN and isinstance(m, (nn.Sequential, nn.ModuleList)):
                top += [(f"{n}.{i}", c) for i, c in m.named_children()]
            else:
                top.append((n, m))
        return group_stages(top)

    def stages(self) -> list[tuple[str, nn.Module]]:
        return checked_stages(
            self,
            self._stage_modules(),
            self.in_shape,
            what="timm",
            allowed="convolutional models: resnet*, efficientnet*, mobilenetv3*, convnext*, regnet*, ...",
        )

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.net.forward_features(x)  # type: ignore[operator]
        if features.dim() == 3:  # transformer tokens [B, N, D] -> channels first [B, D, N], as heads pool
            features = features.transpose(1, 2)
        return features
