"""backbone=timm: every architecture builds on a timm model's stages and trains the tasks through
them; weights come from a local file (state dict or safetensors), loaded by timm with the input's
channels adapted, and nothing reaches the network; a model that is not a sequence of stages is
refused for soft sharing at validation, with the key and the fix."""

from __future__ import annotations

import socket

import pytest
import torch
from test_archs import OUTLINES, SHAPES, one_batch_of_each

from mtl_cli.build import build_model, build_tasks
from mtl_cli.config.compose import compose
from mtl_cli.errors import ConfigError
from mtl_cli.registry import ARCHS
from mtl_cli.tasks.base import LossComputer
from mtl_cli.train.api import train
from mtl_cli.validation import validate

timm = pytest.importorskip("timm", reason='timm is not installed: pip install "mtl-cli[timm]"')

MODEL = "mobilenetv3_small_050"  # 0.6 M parameters, 7 stages
TIMM = ["backbone=timm", f"backbone.model={MODEL}", "trainer.progress=false"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No connection may be opened (timm would download weights; it must not)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def overrides_for(arch: str) -> list[str]:
    if not ARCHS.get(arch).single_input:  # two image datasets, each with its own stem, then the timm stages
        return [*TIMM, *SHAPES, *OUTLINES, "experiment=two_inputs", f"arch={arch}"]
    return [*TIMM, *SHAPES, f"arch={arch}"]


#: hard sharing, one soft-sharing and one expert architecture and the multi-input one build on
#: timm's stages in the default suite (MTAN also trains in test_a_run_on_a_timm_backbone_trains_and_tests);
#: every architecture with -m slow (the ones that cut a backbone into stages are built on torchvision's
#: in the default suite too: test_archs.py::test_soft_sharing_on_a_torchvision_backbone)
BUILDS_IN_THE_DEFAULT_SUITE = ("hps", "mtan", "mmoe", "multi_input")


@pytest.mark.parametrize(
    "arch",
    [a if a in BUILDS_IN_THE_DEFAULT_SUITE else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS.names()],
)
def test_every_architecture_builds_on_the_stages_and_trains_every_task(arch):
    torch.manual_seed(0)
    plan = validate(compose(overrides_for(arch)))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks).train()
    params = {id(p): p for p in model.parameters()}
    shared = {id(p) for p in model.shared_parameters()}
    own = {t.name: {id(p) for p in model.task_parameters(t.name)} for t in tasks}
    assert sum(len(g) for g in [shared, *own.values()]) == len(params)  # an exact partition
    batch = one_batch_of_each(plan, n=4)
    preds = model(batch["inputs"])
    assert list(preds) == [t.name for t in tasks]
    losses = LossComputer(tasks)(preds, batch["targets"], batch["masks"])
    assert torch.isfinite(losses).all()
    plist = list(params.values())
    timm_params = {id(p) for m in model.modules() if type(m).__module__.startswith("timm.") for p in m.parameters()}
    assert timm_params and timm_params <= set(params)
    for i, t in enumerate(tasks):
        grads = torch.autograd.grad(losses[i], plist, retain_graph=True, allow_unused=True)
        touched = {id(p) for p, g in zip(plist, grads) if g is not None and g.abs().sum() > 0}
        assert touched & own[t.name], f"{t.name}'s loss trains its own parameters"
        assert touched & timm_params, f"{t.name}'s loss trains the timm layers"


def test_a_run_on_a_timm_backbone_trains_and_tests(tmp_path):
    summary = train(compose([*TIMM, *SHAPES, "arch=mtan", "debug=smoke"]), tmp_path / "run")
    assert summary["steps"] >= 1 and set(summary["test"]) == {"shape", "size", "present", "segmentation"}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("grayscale", [False, True])
def test_weights_come_from_a_local_file(tmp_path, suffix, grayscale):
    torch.manual_seed(1)
    full = timm.create_model(MODEL)  # with its classifier, as a downloaded checkpoint would be
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    else:
        torch.save(full.state_dict(), path)
    extra = ["data.grayscale=true"] if grayscale else []
    plan = validate(compose([*TIMM, *SHAPES, *extra, f"backbone.weights={path}"]))
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    (net,) = [m for m in model.modules() if type(m).__module__.startswith("timm.models")][:1]
    got, want = net.state_dict(), full.state_dict()
    assert "classifier.weight" not in got
    for k, v in got.items():
        if k == "conv_stem.weight" and grayscale:  # timm sums the RGB filters for one channel
            assert v.shape[1] == 1 and torch.allclose(v, want[k].sum(1, keepdim=True))
        else:
            assert torch.equal(v, want[k]), k


def test_a_missing_weights_file_or_model_name_is_refused_at_validation(tmp_path):
    with pytest.raises(ConfigError) as e:
        validate(compose([*TIMM, f"backbone.weights={tmp_path / 'none.safetensors'}"]))
    assert "backbone.weights" in e.value.render() and "nothing is downloaded" in e.value.render()
    with pytest.raises(ConfigError) as e:
        validate(compose([*TIMM, "backbone.model=resnet_nope"]))
    assert "backbone.model" in e.value.render() and "timm.list_models()" in e.value.render()


def test_a_model_that_is_no_sequence_of_stages_is_refused_for_soft_sharing():
    from mtl_cli.data.base import InputSpec
    from mtl_cli.models.backbones.timm_models import TimmBackbone

    vit = TimmBackbone(InputSpec("image", (3, 224, 224)), model="vit_tiny_patch16_224")
    assert vit.out_shape[0] == 192  # hard sharing reads its features
    with pytest.raises(ConfigError) as e:
        vit.stages()
    text = e.value.render()
    assert "backbone.model" in text and "not a plain sequence of stages" in text and "arch=hps" in text
