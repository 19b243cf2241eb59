"""Backbones and heads from the registries: shapes, stages, weights files, parameter partition."""

import pytest
import torch

from mtl_cli.config.checks import component_problems
from mtl_cli.data.base import InputSpec
from mtl_cli.models.backbones.torchvision_models import TorchvisionBackbone
from mtl_cli.registry import BACKBONES, HEADS


@pytest.mark.parametrize(
    "model,channels",
    [("resnet18", 512), ("mobilenet_v3_small", 576), ("efficientnet_b0", 1280), ("convnext_tiny", 768)],
)
def test_torchvision_backbone_returns_a_feature_map(model, channels):
    bb = TorchvisionBackbone(InputSpec("image", (3, 64, 64)), model=model)
    assert bb.out_shape == (channels, 2, 2)  # stride 32
    assert bb(torch.zeros(2, 3, 64, 64)).shape == (2, channels, 2, 2)
    assert len(bb.stages()) >= 1


def test_torchvision_backbone_grayscale_and_local_weights(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(ref.conv1.weight, 0.01)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    bb = TorchvisionBackbone(InputSpec("image", (1, 32, 32)), model="resnet18", weights=str(path))
    assert torch.equal(bb.body.conv1.weight, ref.conv1.weight)
    assert bb(torch.rand(2, 1, 32, 32)).shape == (2, 512, 1, 1)


def test_unknown_torchvision_model_and_missing_weights_are_refused_at_validation(tmp_path):
    """Declared in the constructor's annotations, so validation refuses them before any build."""

    def problems(**keys):
        return [(p.key, p.value) for p in component_problems("backbone", {"name": "torchvision", **keys}, BACKBONES)]

    assert problems(model="resnet18", weights=None) == []
    assert problems(model="resnet19") == [("backbone.model", "resnet19")]
    assert problems(weights=str(tmp_path / "no.pt")) == [("backbone.weights", str(tmp_path / "no.pt"))]
    assert problems(weights="NO_SUCH_WEIGHTS") == [("backbone.weights", "NO_SUCH_WEIGHTS")]
    for ok in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        assert problems(weights=ok) == []
    (tmp_path / "w.pt").write_bytes(b"")
    assert problems(weights=str(tmp_path / "w.pt")) == []


def test_small_cnn_and_mlp_shapes():
    cnn = BACKBONES.get("small_cnn")(InputSpec("image", (3, 32, 32)), channels=[8, 16, 32])
    assert cnn.out_shape == (32, 8, 8) and cnn(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 8, 8)
    mlp = BACKBONES.get("mlp")(InputSpec("features", (7,), "tabular"), hidden=[16, 4])
    assert mlp.out_shape == (4,) and mlp(torch.zeros(5, 7)).shape == (5, 4)


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_maps_features_to_outputs(name):
    cls = HEADS.get(name)
    head = cls((32, 8, 8), 5, (32, 32))
    out = head(torch.randn(3, 32, 8, 8))
    assert out.shape == ((3, 5, 32, 32) if cls.dense_output else (3, 5))
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


def test_an_mlp_without_hidden_layers_is_the_flattened_input():
    mlp = BACKBONES.get("mlp")(InputSpec("image", (1, 3, 3), "image"), hidden=[])
    x = torch.arange(18.0).reshape(2, 1, 3, 3)
    assert torch.equal(mlp(x), x.reshape(2, 9)) and mlp.out_shape == (9,)
    assert sum(p.numel() for p in mlp.parameters()) == 0
