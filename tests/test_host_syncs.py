"""The training step's host synchronisations, counted per optimizer step (issue 15).

On an accelerator every read of a device value makes the host wait for the device, so the step is
designed to read nothing back on the default path (``on_nonfinite=skip``, fused AdamW): the
non-finite checks are device flags that mask the update, and they are read at the logging interval.
Gradient methods whose solver runs on the host read one thing per micro-batch: the [T, T] Gramian
(with the losses) in one copy. These tests count reads with an instrumented tensor class on the CPU
(``tests/helpers/host_reads.py``) and, where CUDA is present, with torch's sync debug mode.
"""

from __future__ import annotations

import collections
import warnings

import pytest
import torch
from conftest import SMALL_DATA
from helpers.host_reads import count_host_reads

import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.train.api import train

#: reads per optimizer step on the default path: (weighting overrides, micro-batches) -> reads
DESIGNED = {
    ("weighting=ew",): 0,  # nothing: the step never waits for the device
    ("weighting=upgrad",): 1,  # parameter gradients: the Gramian, once per micro-batch
    ("weighting=mgda_ub",): 1,  # representation gradients: likewise
    ("weighting=upgrad", "weighting.grouping=layer"): 1,  # every layer's Gramian in the same copy
    ("weighting=uw",): 0,  # a loss-based method with learned parameters
}


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif hasattr(x, "batch"):
        yield from _tensors(x.batch)


def _reads_per_step(monkeypatch, tmp_path, extra: list[str], steps: int = 5, sizes: list | None = None) -> list[list]:
    """The reads of each optimizer step after the first two (the optimizer's state is made in the
    first), with logging and checkpoints out of the way; ``sizes`` gets each step's micro-batches."""
    orig = trainer_mod.Trainer.train_step
    per: list[list] = []
    sizes = sizes if sizes is not None else []

    def train_step(self, group):
        if self.prog.step < 2:
            return orig(self, group)
        group = list(group)  # the loader's batches are host tensors
        sizes.append(len(group))
        with count_host_reads(list(_tensors(group))) as reads:
            out = orig(self, group)
        per.append(list(reads.events))
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)
    cfg = compose(SMALL_DATA + [f"trainer.max_steps={steps + 2}", "logger.log_every=1000", *extra])
    train(cfg, tmp_path / "run")
    return per


@pytest.mark.parametrize("extra", list(DESIGNED), ids=" ".join)
def test_the_step_reads_the_designed_number_of_device_values(monkeypatch, tmp_path, extra):
    per = _reads_per_step(monkeypatch, tmp_path, list(extra))
    assert len(per) == 5
    where = collections.Counter(w for step in per for w in step)
    assert [len(step) for step in per] == [DESIGNED[extra]] * 5, where


def test_accumulation_reads_once_per_micro_batch_for_gramian_methods(monkeypatch, tmp_path):
    sizes: list[int] = []
    per = _reads_per_step(monkeypatch, tmp_path, ["weighting=upgrad", "trainer.accumulate_grad_batches=3"], 4, sizes)
    assert [len(step) for step in per] == sizes and 3 in sizes  # (an epoch's last step may be shorter)
    per = _reads_per_step(monkeypatch, tmp_path / "ew", ["trainer.accumulate_grad_batches=3"], 4)
    assert [len(step) for step in per] == [0, 0, 0, 0]


def test_the_counter_sees_each_kind_of_read():
    """The instrument itself: each kind of read of a device tensor counts once, a host copy is
    counted when its values are read, host tensors and host-to-device copies are not counted."""
    x = torch.ones(3)
    with count_host_reads() as reads:
        x.sum().item()
        x.tolist()
        bool(x.sum() > 0)
        float(x[0])
        int(x[1])
        x.cpu().numpy()  # a copy to the host, read once
        h = torch.tensor([1.0, 2.0])  # made on the host
        h.tolist()
        h.to(dtype=torch.float64).numpy()
        d = torch.from_numpy(h.numpy()).to(device="cpu")  # to the device: not a read...
        d.tolist()  # ...but reading the device copy is
    kinds = [k for k, _ in reads.events]
    assert kinds == ["item", "tolist", "__bool__", "__float__", "__int__", "numpy", "tolist"]


def test_a_skipped_step_is_still_skipped_counted_and_named_without_a_read_in_the_step(monkeypatch, tmp_path, caplog):
    """The guarantee kept with the decision on the device: a non-finite loss at step 3 reads nothing
    in the step, the update is dropped, and the skip is counted and named at the next log."""
    orig = trainer_mod.Trainer.train_step
    per: list[int] = []
    orig_losses = trainer_mod.Trainer._check_losses

    def check(self, losses):
        if self.prog.step == 3:
            losses = losses.detach().clone()
            losses[1] = float("nan")
        return orig_losses(self, losses)

    def train_step(self, group):
        if self.prog.step < 2:
            return orig(self, group)
        group = list(group)
        with count_host_reads(list(_tensors(group))) as reads:
            out = orig(self, group)
        per.append(len(reads))
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)
    monkeypatch.setattr(trainer_mod.Trainer, "_check_losses", check)
    caplog.set_level("WARNING", logger="mtl_cli")
    s = train(compose(SMALL_DATA + ["trainer.max_steps=6", "logger.log_every=1000"]), tmp_path / "run")
    assert per == [0, 0, 0, 0]
    assert s["skipped_steps"] == 1 and s["steps"] == 6
    assert any("step 4 skipped (1 so far): non-finite loss of task(s) size" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
@pytest.mark.parametrize("weighting", ["ew", "upgrad", "mgda_ub"])
def test_cuda_sync_debug_mode_agrees(monkeypatch, tmp_path, weighting):
    """Where CUDA is present, torch's own detector counts the synchronising calls of a step."""
    orig = trainer_mod.Trainer.train_step
    per: list[int] = []

    def train_step(self, group):
        if self.prog.step < 2:
            return orig(self, group)
        group = list(group)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out = orig(self, group)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        per.append(sum("synchroniz" in str(w.message) for w in caught))
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)
    extra = ["device=cuda", "trainer.max_steps=7", "logger.log_every=1000", f"weighting={weighting}"]
    train(compose(SMALL_DATA + extra), tmp_path / "run")
    assert per == [DESIGNED[(f"weighting={weighting}",)]] * 5
