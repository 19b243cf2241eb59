"""One run per run directory: ``<run_dir>/.lock`` while a run is live, stale locks taken over,
a run directory holding a run never overwritten without ``resume`` or ``overwrite=true``; and the
messages of a stopped run name only checkpoints that exist.

Also here: a skipped step changes nothing in the model, BatchNorm running statistics included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_faults import _exit, poison
from test_resume import BASE, records

import mtl_cli.cli.train as cli
import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.errors import ConfigError, TrainingError
from mtl_cli.train import rundir
from mtl_cli.train.api import train
from mtl_cli.train.run import run_plan
from mtl_cli.train.rundir import LOCK, OutputError, RunDirLock
from mtl_cli.validation import validate

ONE = BASE + ["trainer.max_epochs=1"]  # 4 steps


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _hold(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock (as a live run does) until it is killed."""
    code = (
        "import sys, time; from pathlib import Path; from mtl_cli.train.rundir import RunDirLock; "
        "RunDirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(300)"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _write_lock(run_dir: Path, **owner) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {"pid": 1, "host": socket.gethostname(), "started": "2020-01-01 00:00:00", "command": "mtl-train"}
    (run_dir / LOCK).write_text(json.dumps(base | owner))


# ---------------------------------------------------------------- the lock
def test_a_second_run_into_a_live_runs_directory_is_refused(tmp_path, capsys):
    d = tmp_path / "run"
    holder = _hold(d)
    try:
        code, err = _exit(ONE + [f"run_dir={d}"], capsys)
        assert code == 2 and "Output error" in err and "is in use by another run" in err, err
        assert f"pid {holder.pid} on host {socket.gethostname()}" in err and "Traceback" not in err
        assert f"delete {d / LOCK}" in err
        assert not (d / "train.log").exists() and not (d / "metrics.jsonl").exists()  # nothing of it written
        assert not (d / "error.json").exists()  # the live run's directory gets no error of another run
        assert json.loads((d / LOCK).read_text())["pid"] == holder.pid  # its lock untouched
    finally:
        holder.kill()  # kill -9: the lock stays, stale
        holder.wait()
    train(compose(ONE), d)  # now taken over
    log = (d / "train.log").read_text()
    assert "took over the stale lock" in log and f"process {holder.pid} no longer runs" in log
    assert not (d / LOCK).exists()


@pytest.mark.parametrize(
    "owner,why",
    [
        (lambda: {"pid": _dead_pid()}, "no longer runs"),
        (lambda: {"pid": os.getppid(), "process_start": "1"}, "no longer runs"),  # the pid now names another process
        (lambda: {"pid": os.getppid(), "boot_id": "another boot"}, "no longer runs"),  # the machine restarted
        (lambda: {"pid": os.getpid()}, "this process holds no lock on it"),
    ],
    ids=["dead pid", "pid reused", "rebooted", "this process"],
)
def test_a_stale_lock_of_this_host_is_taken_over(tmp_path, owner, why):
    d = tmp_path / "run"
    o = owner()
    if "process_start" not in o and o["pid"] == os.getpid():
        o["process_start"] = rundir._process_start(os.getpid())
    _write_lock(d, **o)
    train(compose(ONE), d)
    log = (d / "train.log").read_text()
    assert "took over the stale lock" in log and why in log, log
    assert not (d / LOCK).exists()


def test_a_lock_of_another_host_is_refused_with_how_to_remove_it(tmp_path, capsys):
    d = tmp_path / "run"
    _write_lock(d, pid=_dead_pid(), host="gpu-node-17")
    code, err = _exit(ONE + [f"run_dir={d}"], capsys)
    assert code == 2 and "on host gpu-node-17" in err and "another host" in err, err
    assert f"delete {d / LOCK}" in err and "Traceback" not in err
    assert (d / LOCK).exists()


def test_the_lock_is_held_during_the_run_and_gone_after_success(monkeypatch, tmp_path):
    seen = []
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        if not seen:
            seen.append(json.loads((self.run_dir / LOCK).read_text()))
        orig(self)

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    d = tmp_path / "run"
    train(compose(ONE), d)
    owner = seen[0]
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["command"]
    assert not (d / LOCK).exists() and not list(d.glob(".lock*")) and not list(d.glob(".write_probe*"))
    assert not rundir._HELD


def test_the_lock_is_gone_after_an_error(monkeypatch, tmp_path):
    poison(monkeypatch, "size", {2})
    with pytest.raises(TrainingError):
        train(compose(ONE + ["trainer.on_nonfinite=stop"]), tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists() and not rundir._HELD


def test_the_lock_is_gone_after_sigterm(monkeypatch, tmp_path, capsys):
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        if self.prog.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        orig(self)

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    d = tmp_path / "run"
    code, _ = _exit(ONE + [f"run_dir={d}"], capsys)
    assert code == 3 and (d / "checkpoints" / "last.pt").is_file()
    assert not (d / LOCK).exists() and not rundir._HELD


def test_a_lock_left_by_the_process_is_removed_at_exit(tmp_path):
    """The atexit hook: a process that ends without its run's ``finally`` (here: never released)."""
    code = (
        "import sys; from pathlib import Path; from mtl_cli.train.rundir import RunDirLock; "
        "RunDirLock(Path(sys.argv[1])).acquire(); sys.exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    assert not (tmp_path / LOCK).exists()


def test_two_locks_race_for_one_directory_and_one_wins(tmp_path):
    a, b = RunDirLock(tmp_path), RunDirLock(tmp_path)
    a.acquire()
    try:
        with pytest.raises(OutputError) as e:
            b.acquire()
        assert f"pid {os.getpid()}" in str(e.value)
    finally:
        a.release()
    b.acquire()  # free again
    b.release()
    assert not (tmp_path / LOCK).exists()


# ---------------------------------------------------------------- a run directory that holds a run
def test_a_finished_run_is_not_overwritten_without_resume(tmp_path, capsys):
    d = tmp_path / "run"
    cli.main(ONE + [f"run_dir={d}"])
    before = {f: (d / f).read_bytes() for f in ("summary.json", "metrics.jsonl", "train.log")}
    code, err = _exit(ONE + [f"run_dir={d}"], capsys)
    assert code == 2 and "Output error" in err and f"{d} holds a finished run" in err, err
    assert "resume=auto" in err and "another run_dir" in err and "overwrite=true" in err and "Traceback" not in err
    assert {f: (d / f).read_bytes() for f in before} == before and not (d / "error.json").exists()
    hydra_before = (d / ".hydra" / "overrides.yaml").read_bytes()
    code, err = _exit(ONE + [f"run_dir={d}", "seed=7"], capsys)  # refused before Hydra writes .hydra/
    assert code == 2 and (d / ".hydra" / "overrides.yaml").read_bytes() == hydra_before
    cli.main(ONE + [f"run_dir={d}", "resume=auto", "trainer.max_epochs=2"])  # continues it
    assert json.loads((d / "summary.json").read_text())["steps"] == 8
    (d / "summary.json").unlink()  # as an interrupted run leaves it: last.pt, no summary
    code, err = _exit(ONE + [f"run_dir={d}"], capsys)
    assert code == 2 and f"{d} holds an interrupted run (checkpoints/last.pt)" in err


def test_overwrite_true_starts_over(tmp_path):
    d = tmp_path / "run"
    cli.main(BASE + ["trainer.max_epochs=2", f"run_dir={d}"])
    (d / "checkpoints" / "top").mkdir()
    cli.main(ONE + [f"run_dir={d}", "overwrite=true"])
    s = json.loads((d / "summary.json").read_text())
    assert s["steps"] == 4 and s["epochs"] == 1
    assert [r["epoch"] for r in records(d) if r["split"] == "val"] == [1]  # only the new run's records
    assert not (d / "checkpoints" / "top").exists()
    log = (d / "train.log").read_text()
    assert "overwrite=true: deleted checkpoints, summary.json" in log and "resumed from" not in log
    assert log.count("run directory:") == 1  # the earlier run's log went with it


def test_overwrite_works_on_a_plain_plan_too(tmp_path):
    """run_plan reads overwrite with .get: plans built from configs without the key still work."""
    d = tmp_path / "run"
    train(compose(ONE), d)
    plan = validate(compose(ONE))
    plan.cfg.pop("overwrite", None)
    with pytest.raises(OutputError, match="holds a finished run"):
        run_plan(plan, d)
    plan.cfg["overwrite"] = True
    assert run_plan(plan, d)["steps"] == 4


def test_overwrite_and_resume_together_are_refused(tmp_path, capsys):
    d = tmp_path / "run"
    code, err = _exit(ONE + [f"run_dir={d}", "resume=auto", "overwrite=true"], capsys)
    assert code == 2 and "overwrite" in err and "resume=auto" in err and "Traceback" not in err, err
    assert not (d / "train.log").exists()
    plan = validate(compose(ONE + ["resume=auto", "overwrite=true"]))
    with pytest.raises(ConfigError):
        run_plan(plan, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_baseline_stl_locks_the_parent_and_each_task_run(monkeypatch, tmp_path, capsys):
    two = ONE + ["tasks.present.enabled=false", "trainer.checkpoint_every=null"]
    d = tmp_path / "base"
    held = []
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        if self.prog.step == 0:
            held.append(sorted(str(p.relative_to(d)) for p in d.rglob(LOCK)))
        orig(self)

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
        cli.main(two + ["baseline=stl", f"run_dir={d}"])
    assert held == [[".lock", "shape/.lock"], [".lock", "size/.lock"]]
    assert not list(d.rglob(LOCK))
    code, err = _exit(two + ["baseline=stl", f"run_dir={d}"], capsys)  # finished: refused
    assert code == 2 and f"{d} holds a finished run" in err and "resume=auto" in err
    (d / "summary.json").unlink()
    (d / "baselines.json").unlink()
    code, err = _exit(two + ["baseline=stl", f"run_dir={d}"], capsys)  # its task runs are checked too
    assert code == 2 and f"{d / 'shape'} holds a finished run" in err
    assert not (d / "error.json").exists()
    cli.main(two + ["baseline=stl", f"run_dir={d}", "overwrite=true"])  # starts the parent and every task over
    assert (d / "baselines.json").is_file() and not list(d.rglob(LOCK))
    for task in ("shape", "size"):
        assert "overwrite=true: deleted checkpoints" in (d / task / "train.log").read_text()


def test_check_run_dir_refuses_before_anything_is_written(tmp_path):
    """The read-only check that the CLI can run before Hydra writes .hydra/ into run_dir."""
    fresh = tmp_path / "fresh"
    rundir.check_run_dir(fresh)
    assert not fresh.exists()
    d = tmp_path / "run"
    holder = _hold(d)
    try:
        with pytest.raises(OutputError) as e:
            rundir.check_run_dir(d, "auto")
        assert f"pid {holder.pid}" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    rundir.check_run_dir(d)  # its lock is stale now
    (d / "summary.json").write_text("{}")
    with pytest.raises(OutputError, match="holds a finished run"):
        rundir.check_run_dir(d)
    rundir.check_run_dir(d, "auto")
    rundir.check_run_dir(d, None, overwrite=True)
    with pytest.raises(OutputError, match="holds a finished run"):
        rundir.check_run_dir(d, stl=True)
    assert sorted(p.name for p in d.iterdir()) == [LOCK, "summary.json"]  # nothing written


# ---------------------------------------------------------------- messages of a stopped run
def test_a_stop_at_step_1_names_no_checkpoint(monkeypatch, tmp_path):
    poison(monkeypatch, "size", {1})
    with pytest.raises(TrainingError) as e:
        train(compose(ONE + ["trainer.on_nonfinite=stop"]), tmp_path / "run")
    msg = str(e.value)
    assert "step 1 (epoch 1)" in msg and "No checkpoint was written yet" in msg
    assert "best.pt" not in msg and "last.pt" not in msg


def test_a_later_stop_names_the_checkpoints_that_exist(monkeypatch, tmp_path):
    poison(monkeypatch, "present", {6})
    with pytest.raises(TrainingError) as e:
        train(compose(BASE + ["trainer.on_nonfinite=stop"]), tmp_path / "run")
    msg = str(e.value)
    assert "last.pt (step 4) holds the last finite weights written" in msg
    assert "best.pt (step 4) holds the best weights so far" in msg


def test_too_many_skips_before_any_checkpoint_name_none(monkeypatch, tmp_path):
    poison(monkeypatch, "size", {1, 2})
    with pytest.raises(TrainingError) as e:
        train(compose(ONE + ["trainer.max_skipped_steps=1", "trainer.checkpoint_every=null"]), tmp_path / "run")
    assert "No checkpoint was written yet" in str(e.value) and ".pt" not in str(e.value)


# ---------------------------------------------------------------- a skipped step changes nothing
CNN = BASE + ["backbone=small_cnn", "trainer.max_epochs=1"]


def _nan_input(monkeypatch, micro_batches: set[int]) -> None:
    """NaN in the first image of the given (1-based) micro-batches: the forward's BatchNorm
    statistics take it, every loss is NaN."""
    orig = trainer_mod.to_device
    n = {"micro": 0}

    def to_device(batch, device, *args):
        inputs, targets, masks = orig(batch, device, *args)
        n["micro"] += 1
        if n["micro"] in micro_batches:
            inputs = {k: v.clone() for k, v in inputs.items()}
            next(iter(inputs.values()))[0].fill_(float("nan"))
        return inputs, targets, masks

    monkeypatch.setattr(trainer_mod, "to_device", to_device)


def _stats(trainer) -> list[torch.Tensor]:
    return [b.clone() for b in trainer_mod.norm_statistics(trainer.model)]


@pytest.mark.parametrize(
    "case,extra",
    [
        ("nan input", []),
        ("nan input in the second micro-batch", ["trainer.accumulate_grad_batches=2"]),
        ("inf gradient, finite losses", []),
    ],
)
def test_a_skipped_step_leaves_the_batchnorm_statistics_as_they_were(monkeypatch, tmp_path, case, extra):
    """small_cnn has BatchNorm: after the skipped step 2, every running_mean/var and
    num_batches_tracked equals its value before the step (before its first micro-batch), and the
    run goes on with finite statistics (their checkpoint guard would stop it otherwise)."""
    if case.startswith("nan input"):
        _nan_input(monkeypatch, {4} if "second" in case else {2})
    orig_step, orig_opt = trainer_mod.Trainer.train_step, trainer_mod.Trainer.optimizer_step
    seen = {}

    def train_step(self, group):
        before = _stats(self) if self.prog.step == 1 and not seen else None  # step 2's first try
        stepped = orig_step(self, group)
        if before is not None:
            seen["stepped"], seen["before"], seen["after"] = stepped, before, _stats(self)
        return stepped

    def optimizer_step(self):
        if case.startswith("inf") and self.prog.step == 1 and "inf" not in seen:
            seen["inf"] = True
            next(p for p in self.params if p.grad is not None).grad.view(-1)[0] = float("inf")
        orig_opt(self)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", train_step)
    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    s = train(compose(CNN + extra), tmp_path / "run")
    assert s["skipped_steps"] == 1  # decided on the device: the step counts, its update and statistics do not
    assert seen["before"] and any(b.is_floating_point() for b in seen["before"])
    assert all(torch.equal(a, b) for a, b in zip(seen["before"], seen["after"]))
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for k, v in last["model"].items() if "running" in k)


@pytest.mark.parametrize("policy", ["ignore", "stop"])
def test_norm_statistics_are_copied_only_when_steps_can_be_skipped(policy):
    """No step is ever dropped with on_nonfinite=ignore, and stop ends the run: no copy."""
    t = trainer_mod.Trainer(validate(compose(CNN + [f"trainer.on_nonfinite={policy}"])), Path("unused"))
    assert t.norm_stats == [] and t._norm_stats_before == []
    t = trainer_mod.Trainer(validate(compose(CNN)), Path("unused"))  # skip, the default
    assert [b.data_ptr() for b in t.norm_stats] == [b.data_ptr() for b in trainer_mod.norm_statistics(t.model)]
    assert t.norm_stats and not Path("unused").exists()  # construction writes nothing
