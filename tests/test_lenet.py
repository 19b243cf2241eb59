"""backbone=lenet: the LeNet encoder of the MultiMNIST papers, and experiment=multi_fashion_lenet."""

from __future__ import annotations

import pytest
import torch

from mtl_cli.config.checks import component_problems
from mtl_cli.data.base import InputSpec
from mtl_cli.errors import ConfigError
from mtl_cli.models.backbones.lenet import LeNet, conv_side
from mtl_cli.registry import BACKBONES

CANVAS = InputSpec("image", (1, 36, 36), "image")


def test_defaults_are_pareto_mtl_lenet_on_36_px():
    """conv 10@9x9 -> pool -> conv 20@5x5 -> pool: 36 -> 28 -> 14 -> 10 -> 5, 500 features into
    50: 810+10 + 5000+20 + 25000+50 = 30,890 parameters."""
    net = BACKBONES.get("lenet")(CANVAS)
    assert isinstance(net, LeNet) and net.out_shape == (50,)
    assert sum(p.numel() for p in net.parameters()) == 30_890
    assert [m.kernel_size for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [(9, 9), (5, 5)]
    assert [m.in_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [500]
    assert conv_side(36, [9, 5]) == 5 and conv_side(28, [9, 5]) == 3


def test_forward_is_the_layers_and_stages_compose_to_it():
    torch.manual_seed(0)
    net = LeNet(CANVAS, channels=[4, 6], kernels=[5, 3], dim=7).eval()
    x = torch.rand(3, 1, 36, 36)
    conv1, conv2 = (m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    fc = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    h = torch.nn.functional.max_pool2d(torch.relu(conv1(x)), 2)
    h = torch.nn.functional.max_pool2d(torch.relu(conv2(h)), 2)  # 36 -> 32 -> 16 -> 14 -> 7
    expected = torch.relu(fc(h.flatten(1)))
    out = net(x)
    assert out.shape == (3, 7) and torch.allclose(out, expected, atol=1e-6)
    stages = net.stages()
    assert [n for n, _ in stages] == ["conv1", "conv2", "fc"]
    y = x
    for _, m in stages:
        y = m(y)
    assert torch.equal(y, out)


def test_kernels_must_match_channels_and_fit_the_image():
    with pytest.raises(ConfigError) as e:
        LeNet(CANVAS, channels=[10, 20], kernels=[9])
    [p] = e.value.problems
    assert p.key == "backbone.kernels" and "2 sizes" in p.allowed
    small = InputSpec("image", (1, 16, 16), "image")
    [p] = LeNet.check({"channels": [10, 20], "kernels": [9, 5]}, small)  # 16 -> 8 -> 4 -> 0
    assert p.key == "backbone.kernels" and "16-pixel" in p.message
    assert component_problems("backbone", {"name": "lenet", "dim": 0}, BACKBONES)[0].key == "backbone.dim"


def test_experiment_multi_fashion_lenet_is_the_protocol(tmp_path):
    """The preset composes to Pareto MTL's settings and builds the 30,890 + 2 x 510 parameter model."""
    from test_data_torchvision import fake_mnist

    from mtl_cli import compose
    from mtl_cli.build import build_model, build_tasks
    from mtl_cli.validation.plan import validate

    fake_mnist(tmp_path, "FashionMNIST")
    cfg = compose(["experiment=multi_fashion_lenet", f"data.root={tmp_path}"])
    assert cfg.data.image_size == 36 and cfg.data.pairs_per_item == 2 and cfg.data.base == "FashionMNIST"
    assert cfg.backbone.name == "lenet" and cfg.trainer.batch_size == 256 and cfg.trainer.max_epochs == 100
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov, cfg.optimizer.weight_decay) == (
        0.001,
        0.9,
        False,
        0.0,
    )
    assert (cfg.scheduler.step_size, cfg.scheduler.gamma, cfg.scheduler.interval) == (15, 0.5, "epoch")
    plan = validate(cfg)
    model = build_model(plan, build_tasks(plan))
    assert sum(p.numel() for p in model.shared_parameters()) == 30_890
    assert sum(p.numel() for p in model.parameters()) == 30_890 + 2 * 510
