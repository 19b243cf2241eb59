"""Speed options (trainer.compile, channels_last, data_on_device, num_workers=auto): the runs they
give, the checkpoints they write (the same files as eager runs: either loads the other's), and
resume bit for bit with them on (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_resume import BASE, assert_same_run, interrupted_then_resumed, records, run, weights
from torch.utils.data import Dataset

import mtl_cli.train.batches as batches
from mtl_cli.config.compose import compose
from mtl_cli.data.base import InMemoryDataset
from mtl_cli.errors import ConfigError
from mtl_cli.validation import validate

CNN = BASE + ["backbone=small_cnn", "trainer.max_epochs=2"]  # 8 steps, convolutions and a segmentation map
COMPILED = ["trainer.compile=true", "trainer.compile_backend=aot_eager"]  # inductor: the slow test


def close_metrics(ref: Path, got: Path, rel: float) -> None:
    a = json.loads((ref / "summary.json").read_text())["test"]
    b = json.loads((got / "summary.json").read_text())["test"]
    assert a.keys() == b.keys()
    for task, m in a.items():
        for k, v in m.items():
            assert b[task][k] == pytest.approx(v, rel=rel, abs=rel), (task, k, v, b[task][k])


def close_weights(ref: Path, got: Path, rel: float) -> None:
    """The same keys (no ``_orig_mod.``), and all weights within ``rel`` of the reference's norm."""
    a, b = weights(ref / "checkpoints" / "last.pt")["model"], weights(got / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    x = torch.cat([a[k].double().flatten() for k in a])
    y = torch.cat([b[k].double().flatten() for k in a])
    assert (x - y).norm() <= rel * x.norm(), float((x - y).norm() / x.norm())


@pytest.fixture(scope="module")
def eager_cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("eager") / "run"
    run(CNN, d)
    return d


def test_a_compiled_run_computes_what_the_eager_run_does(tmp_path, eager_cnn):
    run(CNN + COMPILED, tmp_path / "c")
    close_weights(eager_cnn, tmp_path / "c", 1e-4)
    close_metrics(eager_cnn, tmp_path / "c", 1e-4)
    got = records(tmp_path / "c")
    assert [r["step"] for r in got] == [r["step"] for r in records(eager_cnn)]


@pytest.mark.parametrize(
    "first,then",
    [(COMPILED, []), pytest.param([], COMPILED, marks=pytest.mark.slow)],
    ids=["compiled-then-eager", "eager-then-compiled"],
)
def test_compiled_and_eager_runs_resume_from_each_others_checkpoints(monkeypatch, tmp_path, eager_cnn, first, then):
    """Interrupted after step 5 in one mode, resumed in the other: the run ends where the eager run
    does (within float noise of the compiled part), its checkpoint keys the model's own."""
    from test_resume import Crash, crash_after

    d = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_after(m, 5)
        with pytest.raises(Crash):
            run(CNN + first, d)
    assert weights(d / "checkpoints" / "last.pt")["step"] == 4  # checkpoint_every=2: step 4's
    run(CNN + then + ["resume=auto"], d)
    assert json.loads((d / "summary.json").read_text())["steps"] == 8
    close_weights(eager_cnn, d, 1e-4)


def test_speed_options_resume_bitwise(monkeypatch, tmp_path):
    ov = CNN + COMPILED + ["trainer.channels_last=true", "trainer.data_on_device=true", "trainer.num_workers=auto"]
    run(ov, tmp_path / "ref")
    interrupted_then_resumed(monkeypatch, ov, tmp_path / "run", 5)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_channels_last_trains_in_that_format_and_computes_the_same(tmp_path, eager_cnn):
    run(CNN + ["trainer.channels_last=true"], tmp_path / "cl")
    w = weights(tmp_path / "cl" / "checkpoints" / "last.pt")["model"]
    convs = {k: v for k, v in w.items() if v.dim() == 4}
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) for v in convs.values())
    plain = weights(eager_cnn / "checkpoints" / "last.pt")["model"]
    assert not all(plain[k].is_contiguous(memory_format=torch.channels_last) for k in convs)
    # other convolution kernels: other rounding, which Adam's normalised steps carry on
    close_weights(eager_cnn, tmp_path / "cl", 1e-3)
    close_metrics(eager_cnn, tmp_path / "cl", 2e-2)


def test_data_on_device_gives_the_same_run(tmp_path, eager_cnn):
    """On the CPU the copy is the data itself: the same batches, bit for bit."""
    run(CNN + ["trainer.data_on_device=true"], tmp_path / "dev")
    assert_same_run(eager_cnn, tmp_path / "dev")


def test_device_dataset_holds_the_batches_of_its_source():
    g = torch.Generator().manual_seed(0)
    src = InMemoryDataset(
        {"x": torch.randn(10, 3, generator=g)}, {"y": torch.arange(10)}, {"y": torch.arange(10) % 3 > 0}
    )
    dev = batches.DeviceDataset(src, torch.device("cpu"))
    idx = [7, 2, 2, 9]
    a, b = src.__getitems__(idx), dev.__getitems__(idx)
    for part in ("inputs", "targets", "masks"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k])
    assert len(dev) == 10 and torch.equal(dev[3]["inputs"]["x"], src[3]["inputs"]["x"])


class _Files(Dataset):  # read item by item (no __getitems__): stands for data read from files
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"inputs": {}, "targets": {}, "masks": {}}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("cpus,local,want", [(1, 1, 0), (2, 1, 1), (4, 1, 3), (64, 1, 8), (16, 4, 3), (4, 8, 0)])
def test_auto_workers_from_the_usable_cpus(monkeypatch, cpus, local, want):
    monkeypatch.setattr(batches, "usable_cpus", lambda: cpus)
    assert batches.auto_workers(_Files(), local) == want
    in_memory = InMemoryDataset({"x": torch.zeros(4, 1)}, {"y": torch.zeros(4)})
    assert batches.auto_workers(in_memory, local) == 0  # a batch is one gather: no worker helps
    loader = batches.make_loader(_Files(), 2, False, 0, "auto", torch.device("cpu"), local_processes=local)
    assert loader.num_workers == want


@pytest.mark.parametrize(
    "override,key,words",
    [
        ("trainer.num_workers=many", "trainer.num_workers", "auto (from the CPU count"),
        ("trainer.compile_mode=fastest", "trainer.compile_mode", "reduce-overhead"),
        ("trainer.compile_backend=tvm", "trainer.compile_backend", "aot_eager"),
        ("trainer.channels_last=maybe", "trainer.channels_last", "maybe"),
    ],
)
def test_bad_speed_options_are_refused_at_validation(override, key, words):
    with pytest.raises(ConfigError) as e:
        validate(compose(BASE + [override]))
    text = e.value.render()
    assert key in text and words in text


@pytest.mark.slow
def test_inductor_compiled_run_computes_what_the_eager_run_does(tmp_path, eager_cnn):
    run(CNN + ["trainer.compile=true", "trainer.compile_mode=max-autotune-no-cudagraphs"], tmp_path / "ind")
    # inductor's fused kernels sum in another order: after the run's steps the weights differ by
    # 7e-4 of their norm on an AVX-512 CPU (1e-4 elsewhere); a wrong step differs by ~1
    close_weights(eager_cnn, tmp_path / "ind", 5e-3)
    close_metrics(eager_cnn, tmp_path / "ind", 5e-3)
