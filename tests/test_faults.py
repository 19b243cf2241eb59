"""Faults: non-finite losses and gradients, killed and signalled processes, failing sweep jobs,
unwritable outputs, and bad or hostile checkpoints. Each ends with a clear message (the task, the
step, the file) and the documented exit code, and never costs the last good checkpoint."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_resume import BASE, assert_same_run, records

import mtl_cli.cli.train as cli
import mtl_cli.train.checkpoint as ckpt_mod
import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.errors import TrainingError
from mtl_cli.tasks.base import LossComputer
from mtl_cli.train.api import train

NAN = float("nan")


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def poison(monkeypatch, task: str, steps: set[int], value: float = NAN) -> None:
    """Make ``task``'s loss ``value`` in the micro-batches of the given (1-based) steps."""
    orig = LossComputer.__call__
    calls = {"n": 0}

    def call(self, preds, targets, masks):
        losses = orig(self, preds, targets, masks)
        calls["n"] += 1
        if calls["n"] in steps:
            i = [t.name for t in self.tasks].index(task)
            losses = losses.clone()
            losses[i] = value
        return losses

    monkeypatch.setattr(LossComputer, "__call__", call)


def finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)
    return all(
        torch.isfinite(v).all()
        for part in ("model", "weighting")
        for v in state[part].values()
        if v.is_floating_point()
    )


# ---------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("weighting", ["famo", "dwa", "pcgrad"])
def test_nan_loss_skips_the_step_and_names_the_task(monkeypatch, tmp_path, weighting):
    poison(monkeypatch, "size", {3})
    s = train(compose(BASE + [f"weighting={weighting}"]), tmp_path / "run")
    # 12 batches, 12 steps: the skip is decided on the device, so a skipped step still counts as a
    # step (as with GradScaler), and its update is dropped
    assert s["skipped_steps"] == 1 and s["steps"] == 12
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 3 skipped (1 so far): non-finite loss of task(s) size" in log
    assert finite(tmp_path / "run" / "checkpoints" / "last.pt")  # nor did the weighting's state take the NaN
    train_losses = [r["loss/size"] for r in records(tmp_path / "run") if r["split"] == "train"]
    assert all(v is not None for v in train_losses)  # the skipped batch is not averaged into the logs


def test_inf_loss_of_one_task_names_only_that_task(monkeypatch, tmp_path):
    poison(monkeypatch, "shape", {2}, float("inf"))
    train(compose(BASE + ["weighting=upgrad"]), tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "non-finite loss of task(s) shape" in log and "size" not in log.split("skipped")[1].splitlines()[0]


def test_stop_policy_stops_at_the_step_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path):
    poison(monkeypatch, "present", {6})
    with pytest.raises(TrainingError) as e:
        train(compose(BASE + ["trainer.on_nonfinite=stop"]), tmp_path / "run")
    msg = str(e.value)
    assert "step 6 (epoch 2): non-finite loss of task(s) present" in msg and "on_nonfinite=stop" in msg
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 4 and finite(tmp_path / "run" / "checkpoints" / "last.pt")
    assert json.loads((tmp_path / "run" / "error.json").read_text())["type"] == "TrainingError"


def test_too_many_skipped_steps_stop_the_run(monkeypatch, tmp_path):
    poison(monkeypatch, "size", {2, 3, 5})
    with pytest.raises(TrainingError) as e:
        train(compose(BASE + ["trainer.max_skipped_steps=2"]), tmp_path / "run")
    assert "3 steps skipped, more than trainer.max_skipped_steps=2" in str(e.value)
    assert "non-finite loss of task(s) size" in str(e.value)


def test_nonfinite_gradient_with_finite_losses_is_skipped(monkeypatch, tmp_path):
    orig = trainer_mod.Trainer.optimizer_step
    done = []

    def optimizer_step(self):
        if self.prog.step == 4 and not done:  # step 5's gradient: one entry inf, every loss finite
            next(p for p in self.params if p.grad is not None).grad.view(-1)[0] = float("inf")
            done.append(True)
        orig(self)

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    s = train(compose(BASE), tmp_path / "run")
    assert s["skipped_steps"] == 1
    assert "step 5 skipped (1 so far): non-finite gradient" in (tmp_path / "run" / "train.log").read_text()


def test_nonfinite_weights_never_overwrite_a_good_checkpoint(monkeypatch, tmp_path):
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        orig(self)
        if self.prog.step == 3:  # as an exploding update would leave them
            with torch.no_grad():
                next(iter(self.model.parameters())).fill_(NAN)

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    with pytest.raises(TrainingError) as e:  # with checks off, only the checkpoint guard stands
        train(compose(BASE + ["trainer.on_nonfinite=ignore"]), tmp_path / "run")
    assert "weights are non-finite at step 4" in str(e.value) and "was not overwritten" in str(e.value)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 2 and finite(tmp_path / "run" / "checkpoints" / "last.pt")


def test_training_error_exits_1_without_traceback(monkeypatch, tmp_path, capsys):
    poison(monkeypatch, "size", {2})
    with pytest.raises(SystemExit) as e:
        cli.main(BASE + ["trainer.on_nonfinite=stop", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "Training stopped" in err and "non-finite loss of task(s) size" in err and "Traceback" not in err


# ---------------------------------------------------------------- processes killed or signalled
def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mtl_cli.cli.train",
        *BASE,
        "trainer.checkpoint_every=1",
        f"run_dir={run_dir}",
        *extra,
    ]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV)}
    env["OMP_NUM_THREADS"] = "1"  # the same arithmetic in every process
    return env


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _start_and_stop(run_dir: Path, after_lines: int, sig: int) -> subprocess.CompletedProcess:
    """Start a run; send ``sig`` once metrics.jsonl has ``after_lines`` lines."""
    p = subprocess.Popen(_cmd(run_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    while p.poll() is None and _lines(metrics) < after_lines:
        time.sleep(0.005)
    assert p.poll() is None, "the run ended before the signal: raise the epochs"
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="module")
def process_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("proc") / "ref"
    subprocess.run(_cmd(d), env=_env(), check=True, capture_output=True, timeout=300)
    return d


# metrics.jsonl lines before the kill (5 per epoch: 4 steps and a validation): 2 (epoch 1),
# 6 (just after epoch 1's validation), 12 (epoch 3)
# (slow: CI runs them in its second pass; test_sigterm_... below covers processes in the default suite)
@pytest.mark.slow
@pytest.mark.parametrize("after_lines", [2, 6, 12])
def test_kill_9_then_resume_matches_the_uninterrupted_run(tmp_path, process_reference, after_lines):
    d = tmp_path / "run"
    res = _start_and_stop(d, after_lines, signal.SIGKILL)
    assert res.returncode == -signal.SIGKILL
    ck = torch.load(d / "checkpoints" / "last.pt", weights_only=True)  # readable, whatever the moment
    assert ck["step"] >= 1
    subprocess.run(_cmd(d, "resume=auto"), env=_env(), check=True, capture_output=True, timeout=300)
    assert_same_run(process_reference, d)


def test_sigterm_in_process_finishes_the_step_checkpoints_and_resumes(monkeypatch, tmp_path, capsys):
    """The handler, in-process: a SIGTERM during step 5 lets the step finish, writes last.pt at
    step 5 and exits 3; resume=auto then ends as the uninterrupted run (default suite; the
    subprocess version below is slow)."""
    ov = BASE + [f"run_dir={tmp_path / 'ref'}"]
    cli.main(ov)
    orig = trainer_mod.Trainer.optimizer_step
    sent = []

    def optimizer_step(self):
        if self.prog.step == 4 and not sent:  # arrives in the middle of step 5
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        orig(self)

    d = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
        code, err = _exit(BASE + [f"run_dir={d}"], capsys)
    assert code == 3 and "SIGTERM: stopped after step 5" in err and f"mtl-train resume={d}" in err
    assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed
    cli.main(BASE + [f"run_dir={d}", "resume=auto"])
    assert_same_run(tmp_path / "ref", d)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_3(tmp_path, process_reference):
    d = tmp_path / "run"
    res = _start_and_stop(d, 8, signal.SIGTERM)
    assert res.returncode == 3, res.stderr
    ck = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
    assert f"SIGTERM: stopped after step {ck['step']}" in res.stderr
    assert f"mtl-train resume={d}" in res.stderr and "Traceback" not in res.stderr
    assert not (d / "summary.json").exists() and not (d / "error.json").exists()
    # the stop is at a step boundary: everything logged up to it is in metrics.jsonl, nothing after
    assert [r["step"] for r in records(d) if r["split"] == "train"][-1] == ck["step"]
    subprocess.run(_cmd(d, "resume=auto"), env=_env(), check=True, capture_output=True, timeout=300)
    assert_same_run(process_reference, d)


# ---------------------------------------------------------------- sweeps and outputs
def test_a_failing_sweep_job_does_not_stop_the_others(monkeypatch, tmp_path, capsys):
    orig = trainer_mod.Trainer.fit

    def fit(self):
        if self.plan.cfg["seed"] == 1:
            raise RuntimeError("simulated crash in job 1")
        return orig(self)

    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)
    sweep = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:
        cli.main(["-m", "seed=0,1,2", f"hydra.sweep.dir={sweep}", *BASE, "trainer.max_epochs=1"])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "1 job(s) of the sweep failed" in err and "RuntimeError: simulated crash in job 1" in err
    assert (sweep / "0" / "summary.json").is_file() and (sweep / "2" / "summary.json").is_file()
    assert json.loads((sweep / "1" / "error.json").read_text())["message"] == "simulated crash in job 1"
    assert "Traceback" in (sweep / "1" / "train.log").read_text()  # the details, for whoever looks


def _exit(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code, capsys.readouterr().err


def test_run_dir_below_a_file_names_the_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code, err = _exit(BASE + [f"run_dir={tmp_path / 'afile' / 'run'}"], capsys)
    assert code == 2 and "Output error" in err and str(tmp_path / "afile" / "run") in err
    assert "is a file, not a folder" in err and "choose another run_dir" in err and "Traceback" not in err


def test_no_space_while_writing_a_checkpoint(monkeypatch, tmp_path, capsys):
    real_save = torch.save
    writes = {"n": 0}

    def save(obj, f, *a, **k):
        writes["n"] += f.name.endswith("last.pt.tmp")
        if writes["n"] == 2:  # the second last.pt (step 4): the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    d = tmp_path / "run"
    code, err = _exit(BASE + [f"run_dir={d}"], capsys)
    assert code == 2 and "No space left on device" in err and "free disk space" in err
    assert str(d / "checkpoints") in err
    assert not list((d / "checkpoints").glob("*.tmp"))  # the partial file is gone
    assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["step"] == 2  # the previous one is whole


def test_permission_denied_names_the_path(monkeypatch, tmp_path, capsys):
    real_open = open

    def deny(path, mode="r", *a, **k):
        if str(path).endswith("metrics.jsonl") and "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    code, err = _exit(BASE + [f"run_dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and "Permission denied" in err and str(tmp_path / "run" / "metrics.jsonl") in err
    assert "choose a run_dir you may write to" in err


# ---------------------------------------------------------------- checkpoints: bad, foreign, hostile
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("done") / "run"
    mp = pytest.MonkeyPatch()
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        mp.delenv(var, raising=False)
    try:
        cli.main(BASE + ["trainer.max_epochs=1", f"run_dir={d}"])
    finally:
        mp.undo()
    return d


class _Payload:
    """Unpickling this runs a command: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_bad(kind: str, tmp_path: Path, run: Path) -> Path:
    p = tmp_path / f"{kind}.pt"
    good = (run / "checkpoints" / "last.pt").read_bytes()
    if kind == "truncated":
        p.write_bytes(good[: len(good) // 2])
    elif kind == "text":
        p.write_text("not a checkpoint\n")
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, p)
    elif kind == "hostile":
        with open(p, "wb") as f:
            torch.save({"mtl_cli_checkpoint": 1, "model": _Payload(tmp_path / "pwned")}, f)
    elif kind == "hostile_raw_pickle":
        p.write_bytes(pickle.dumps(_Payload(tmp_path / "pwned")))
    return p


# (id, resume value (a function of tmp_path and the finished run), extra overrides, words in stderr)
CHECKPOINT_CASES = [
    ("missing file", lambda t, r: str(t / "nope.pt"), [], ["resume", "no checkpoint at", "nope.pt", "run directory"]),
    ("run dir without checkpoints", lambda t, r: str(t), [], ["resume", "no checkpoint at", "checkpoints/last.pt"]),
    (
        "truncated",
        lambda t, r: str(_write_bad("truncated", t, r)),
        [],
        ["truncated.pt", "truncated or not a torch checkpoint", "resume from another checkpoint"],
    ),
    (
        "not a checkpoint",
        lambda t, r: str(_write_bad("text", t, r)),
        [],
        ["text.pt", "truncated or not a torch checkpoint"],
    ),
    (
        "foreign state dict",
        lambda t, r: str(_write_bad("foreign", t, r)),
        [],
        ["foreign.pt", "is not an mtl_cli checkpoint", "state_dict"],
    ),
    (
        "hostile pickle in a torch file",
        lambda t, r: str(_write_bad("hostile", t, r)),
        [],
        ["hostile.pt", "refused to load", "could run code", "system", "nothing in it was run"],
    ),
    (
        "hostile raw pickle",
        lambda t, r: str(_write_bad("hostile_raw_pickle", t, r)),
        [],
        ["hostile_raw_pickle.pt", "truncated or not a torch checkpoint", "nothing in it was run"],
    ),
    (
        "other settings",
        lambda t, r: str(r),
        ["weighting=famo", "optimizer.lr=0.01"],
        [
            "resume",
            "was written with other settings",
            "weighting.name: 'static' in the checkpoint, 'famo' now",
            "optimizer.lr: 0.003 in the checkpoint, 0.01 now",
            "resume_strict=false",
        ],
    ),
    (
        "other model",
        lambda t, r: str(r),
        ["backbone.hidden=[32]", "resume_strict=false"],
        ["resume", "holds another model", "of another shape", "backbone"],
    ),
    (
        "resume path in a sweep",
        lambda t, r: str(r),
        ["-m", "seed=0,1"],
        ["resume", "continues one run, not a sweep", "hydra.sweep.dir"],
    ),
]


@pytest.mark.parametrize("make,extra,words", [pytest.param(*c[1:], id=c[0]) for c in CHECKPOINT_CASES])
def test_bad_checkpoints_are_refused_clearly(tmp_path, finished_run, capsys, make, extra, words):
    code, err = _exit([f"resume={make(tmp_path, finished_run)}", *extra], capsys)
    assert code == 2, err
    missing = [w for w in words if w not in err]
    assert not missing, f"{missing} not in:\n{err}"
    assert "Traceback" not in err
    assert not (tmp_path / "pwned").exists()  # the hostile payload never ran


def test_resume_by_path_replays_the_runs_overrides(tmp_path, finished_run, capsys):
    """resume=<run dir> alone continues that run with its own settings (trainer.max_epochs may grow)."""
    before = json.loads((finished_run / "summary.json").read_text())
    cli.main([f"resume={finished_run}", "trainer.max_epochs=2"])
    after = json.loads((finished_run / "summary.json").read_text())
    assert before["epochs"] == 1 and after["epochs"] == 2 and after["steps"] == 8
    assert "logger.log_every=1" in (finished_run / "overrides.yaml").read_text()


def test_checkpoints_hold_only_plain_data(finished_run):
    for p in (finished_run / "checkpoints").glob("*.pt"):
        state = torch.load(p, weights_only=True)  # would raise on any other object
        assert state["mtl_cli_checkpoint"] == 1 and isinstance(state["config_yaml"], str)


def test_atomic_write_keeps_the_previous_file_on_a_crash(monkeypatch, tmp_path):
    path = tmp_path / "last.pt"
    ckpt_mod.save_checkpoint({"step": 1}, path)

    def boom(src, dst):
        raise KeyboardInterrupt  # a kill between the write and the rename

    monkeypatch.setattr(ckpt_mod.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt_mod.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1  # a bare dict: whole, though not a full checkpoint
    assert not (tmp_path / "last.pt.tmp").exists()
