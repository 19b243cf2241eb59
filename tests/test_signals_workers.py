"""Stop signals with DataLoader worker processes (``trainer.num_workers > 0``).

A signal sent to the whole process group (Ctrl-C in a terminal; ``timeout``, Slurm and systemd
with SIGTERM) reaches the workers too. Only the main process answers: it finishes the step,
writes last.pt and exits 3, printing its message once; the workers live on until it ends them.
A worker that dies anyway (killed on its own) ends the run with a clear error, no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from test_faults import _cmd, _env, _exit, _lines, process_reference  # noqa: F401  (a fixture)
from test_resume import BASE, assert_same_run

import mtl_cli.cli.train as cli
import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.train.api import train

WORKERS = ["trainer.num_workers=2"]


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, without workers (the data order does not depend on them)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    mp = pytest.MonkeyPatch()
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        mp.delenv(var, raising=False)
    try:
        cli.main(BASE + [f"run_dir={d}"])
    finally:
        mp.undo()
    return d


def _worker_pids(trainer) -> list[int]:
    pids = [w.pid for it in trainer.stream._iters.values() for w in getattr(it, "_workers", [])]
    assert len(pids) == 2, "the training loader runs no worker processes"
    return pids


@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_group_signal_with_workers_finishes_the_step_checkpoints_and_resumes(
    monkeypatch, tmp_path, capsys, reference, sig
):
    """In-process: during step 5, the signal goes to the main process and both workers, from
    another process (as ``kill -TERM -<pgid>`` does: torch's workers die of a SIGTERM their parent
    did not send). The run stops after step 5 with exit 3; resume=auto (with workers) ends as the
    uninterrupted run without workers."""
    orig = trainer_mod.Trainer.optimizer_step
    sent = []

    def optimizer_step(self):
        if self.prog.step == 4 and not sent:
            sent.append(_worker_pids(self))
            subprocess.run(["kill", f"-{sig}", str(os.getpid()), *map(str, sent[0])], check=True)
        orig(self)

    d = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
        code, err = _exit(BASE + WORKERS + [f"run_dir={d}"], capsys)
    assert code == 3, err
    assert f"SIG{sig}: stopped after step 5" in err and "Traceback" not in err and "DataLoader worker" not in err
    assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed
    assert not (d / ".lock").exists()
    cli.main(BASE + WORKERS + [f"run_dir={d}", "resume=auto"])
    assert_same_run(reference, d)


def test_a_worker_killed_on_its_own_ends_the_run_with_a_clear_error(monkeypatch, tmp_path, capsys):
    """A worker killed from outside (the out-of-memory killer): exit 1, the message names what
    happened, the last checkpoint and the fix; no traceback, error.json written, no checkpoint
    written after it."""
    orig = trainer_mod.Trainer.optimizer_step
    killed = []

    def optimizer_step(self):
        orig(self)
        if self.prog.step == 3 and not killed:  # last.pt (step 2) written
            killed.append(_worker_pids(self)[0])
            os.kill(killed[0], signal.SIGKILL)
            _wait_until_dead(killed[0])

    d = tmp_path / "run"
    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
    code, err = _exit(BASE + WORKERS + [f"run_dir={d}"], capsys)
    assert code == 1, err
    assert "Training stopped" in err and "a data loading worker process died" in err, err
    assert str(killed[0]) in err and "resume=auto" in err and "trainer.num_workers" in err
    assert "last.pt (step 2) holds the last finite weights" in err and "Traceback" not in err
    assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert json.loads((d / "error.json").read_text())["type"] == "TrainingError"
    assert not (d / ".lock").exists()


def _wait_until_dead(pid: int) -> None:
    """Until the kernel reports the child ended (not reaping it: torch reads its status)."""
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        time.sleep(0.01)


def test_a_dead_worker_is_found_after_the_step_not_inside_a_write(monkeypatch, tmp_path, capsys):
    """Torch's SIGCHLD handler would raise wherever the main process is when any child ends
    after a worker died (inside torch.save: a checkpoint write failing as if the disk were
    full). Here a worker dies while the next checkpoint is being written, and another child
    process ends during the write: the write completes, and the death ends the run right after
    it, at the next check, with the worker named."""
    orig, orig_save = trainer_mod.save_checkpoint, trainer_mod.Trainer.save
    killed, trainers = [], []

    def save(self, kind, path=None):
        trainers.append(self)
        return orig_save(self, kind, path)

    def save_checkpoint(state, path):
        if state["step"] == 4 and not killed:
            killed.append(_worker_pids(trainers[-1])[0])
            os.kill(killed[0], signal.SIGKILL)
            _wait_until_dead(killed[0])
            subprocess.run(["true"], check=True)  # another child ends: a SIGCHLD now
        orig(state, path)

    d = tmp_path / "run"
    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(trainer_mod.Trainer, "save", save)
    code, err = _exit(BASE + WORKERS + [f"run_dir={d}"], capsys)  # last.pt every 2 steps
    assert code == 1, err
    assert "a data loading worker process died" in err and str(killed[0]) in err, err
    assert "disk" not in err and "Output error" not in err and "Traceback" not in err
    assert torch.load(d / "checkpoints" / "last.pt", weights_only=True)["step"] == 4  # the write completed


def test_the_runs_workers_end_with_it(monkeypatch, tmp_path):
    """Persistent workers end when the run does, even while something keeps the trainer alive
    (a notebook, an exception's traceback), not whenever it is garbage collected."""
    kept = []
    orig = trainer_mod.Trainer.finish

    def finish(self):
        kept.append((self, _worker_pids(self)))
        return orig(self)

    monkeypatch.setattr(trainer_mod.Trainer, "finish", finish)
    train(compose(BASE + WORKERS + ["trainer.max_epochs=1"]), tmp_path / "run")
    trainer, pids = kept[0]
    for pid in pids:  # reaped by the shutdown: gone from the process table
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(loader._iterator is None for loader in trainer.stream.loaders.values())


class _Stuck(torch.utils.data.Dataset):
    """A worker that reads it never returns: it stands for one stuck before it could answer."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(3600)


def _deaf_to_sigterm(worker_id):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def test_closing_a_loader_ends_a_worker_that_ignores_sigterm(monkeypatch):
    """torch ends a worker that does not stop in time with SIGTERM and leaves it there; a worker
    that survives it would make the interpreter wait for ever at exit. ``Loader.close`` kills and
    reaps it."""
    from torch.utils.data import _utils

    from mtl_cli.train.batches import Loader

    monkeypatch.setattr(_utils, "MP_STATUS_CHECK_INTERVAL", 0.2)  # torch's join timeout
    loader = Loader(_Stuck(), batch_size=1, num_workers=1, persistent_workers=True, worker_init_fn=_deaf_to_sigterm)
    it = iter(loader)  # starts the worker, which takes the first index and sleeps
    (worker,) = it._workers
    try:
        time.sleep(0.5)  # the worker is inside __getitem__, SIGTERM ignored
        loader.close()
        assert not worker.is_alive() and worker.exitcode == -signal.SIGKILL
    finally:
        if worker.is_alive():
            worker.kill()
            worker.join()


def _group_stop(run_dir, sig: int, *extra: str) -> tuple[subprocess.CompletedProcess, int]:
    """A real run with workers in a session of its own; ``sig`` to its whole process group once
    the first step is logged. Returns the result and the group id."""
    p = subprocess.Popen(
        _cmd(run_dir, *WORKERS, *extra),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = run_dir / "metrics.jsonl"
    while p.poll() is None and _lines(metrics) < 1:
        time.sleep(0.005)
    assert p.poll() is None, "the run ended before the signal: raise the epochs"
    os.killpg(p.pid, sig)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), p.pid


def _group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    t = time.monotonic()
    while time.monotonic() - t < wait_s:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# a real process group: the run's start-up (~4 s) and its resume make it slow; the in-process
# test above covers the same mechanism in the default suite
@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_checkpoints_exits_3_and_resumes(
    tmp_path,
    process_reference,  # noqa: F811  (test_faults' fixture: the uninterrupted run, without workers)
):
    d = tmp_path / "run"
    res, pgid = _group_stop(d, signal.SIGTERM)
    assert res.returncode == 3, res.stderr
    ck = torch.load(d / "checkpoints" / "last.pt", weights_only=True)
    assert f"SIGTERM: stopped after step {ck['step']}" in res.stderr
    assert "Traceback" not in res.stderr and "DataLoader worker" not in res.stderr
    assert res.stderr.count("SIGTERM received") == 1, res.stderr  # not once per worker
    assert _group_gone(pgid), "worker processes outlived the run"
    assert not (d / ".lock").exists()
    subprocess.run(_cmd(d, *WORKERS, "resume=auto"), env=_env(), check=True, capture_output=True, timeout=300)
    assert_same_run(process_reference, d)  # the reference ran without workers


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_prints_the_message_once(tmp_path):
    res, pgid = _group_stop(tmp_path / "run", signal.SIGINT)
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("SIGINT received") == 1, res.stderr
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr
    assert _group_gone(pgid), "worker processes outlived the run"
