"""Several processes from the command line (gloo, 2 processes on 127.0.0.1): ``mtl-train
trainer.devices=2`` (torch's elastic launcher), SIGTERM to the process group and resume, a killed
process, bad setups, evaluation, a sweep, and a Slurm-style start. Real processes: slow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_distributed import WORKER, records

pytestmark = pytest.mark.slow

SMALL = [
    "backbone=mlp",
    "data.train_size=256",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=12",
    "tasks.segmentation.enabled=false",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "logger.log_every=1",
    "logger.console_summary=false",
    "device=cpu",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def mtl(args: list[str], cwd: Path, module: str = "mtl_cli.cli.train", **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600, **kw
    )


def torchrun(args: list[str], cwd: Path, module: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", module]
    return subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=600)


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run ended before {n} records: {proc.communicate()}")


def same_weights(a: Path, b: Path) -> None:
    wa = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    wb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)
    assert wa["step"] == wb["step"]
    for part in ("model", "optimizer"):
        if part == "model":
            diff = [k for k in wa[part] if not torch.equal(wa[part][k], wb[part][k])]
            assert not diff, diff[:5]


def test_devices_2_sigterm_to_the_group_checkpoints_exits_3_and_resumes_bitwise(tmp_path):
    ov = SMALL + ["trainer.max_epochs=3", "trainer.devices=2"]
    ref = mtl(ov + [f"run_dir={tmp_path / 'ref'}"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtl_cli.cli.train", *ov, f"run_dir={run}"],
        cwd=tmp_path,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_lines(run / "metrics.jsonl", 5, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # what Slurm, timeout and systemd send: every process of the group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-3000:]
    assert err.count("checkpoint written to") == 1 and "Traceback" not in err  # one message, rank 0's
    assert (run / "checkpoints" / "last.pt").is_file()
    again = mtl(ov + [f"run_dir={run}", "resume=auto"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    same_weights(tmp_path / "ref", run)
    drop = ("samples_per_s",)
    a = [{k: v for k, v in r.items() if k not in drop} for r in records(tmp_path / "ref", "train")]
    b = [{k: v for k, v in r.items() if k not in drop} for r in records(run, "train")]
    assert a == b
    # resuming with another number of processes works, with a warning that the data order differs
    more = mtl(SMALL + ["trainer.max_epochs=4", f"run_dir={run}", "resume=auto"], tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "resuming with 1 processes a run that had 2" in (run / "train.log").read_text()


def test_a_killed_process_stops_the_others_with_a_clear_error(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtl_cli.cli.train",
            *SMALL,
            "trainer.max_epochs=50",
            "trainer.devices=2",
            "trainer.dist_timeout_s=60",
            f"run_dir={run}",
        ],
        cwd=tmp_path,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_lines(run / "metrics.jsonl", 3, proc)
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = sorted(int(p) for p in out)
    assert len(workers) == 2, out
    os.kill(workers[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)  # bounded: the launcher stops the others
    assert proc.returncode == 1, err[-3000:]
    # the run continues from its last checkpoint
    again = mtl(SMALL + ["trainer.max_epochs=2", "trainer.devices=2", f"run_dir={run}", "resume=auto"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.parametrize(
    "args, words",
    [
        (["data.val_size=1"], ["too little data for this many processes", "val has 1 samples"]),
        (["trainer.dist_backend=nccl"], ["trainer.dist_backend", "NCCL needs CUDA GPUs"]),
        (["trainer.sync_batchnorm=true"], ["trainer.sync_batchnorm", "GPUs only"]),
        (["weighting=graddrop", "weighting.source=rep"], ["weighting.source", "Gramian"]),
    ],
)
def test_bad_setups_exit_2_with_the_message_once(args, words, tmp_path):
    done = mtl(SMALL + ["trainer.max_epochs=1", "trainer.devices=2", f"run_dir={tmp_path / 'run'}", *args], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("Config error") == 1, done.stderr  # one message, rank 0's (or the pre-check's)
    for w in words:
        assert w in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_processes_given_different_configs_are_refused(tmp_path):
    spec = tmp_path / "spec.json"
    base = SMALL + ["trainer.max_epochs=1"]
    spec.write_text(
        json.dumps({"base": base, "runs": {"mixed": []}, "out": str(tmp_path), "rank_overrides": {"1": ["seed=5"]}})
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    err = json.loads((tmp_path / "report.json").read_text())["mixed"]["error"]
    assert err["exit_code"] == 2 and "different configs (ranks [1] differ from rank 0)" in err["message"]


def test_evaluation_in_two_processes_equals_one(tmp_path):
    run = tmp_path / "run"
    assert mtl(SMALL + ["trainer.max_epochs=1", f"run_dir={run}"], tmp_path).returncode == 0
    one = mtl([str(run), "split=val"], tmp_path, module="mtl_cli.cli.evaluate")
    assert one.returncode == 0, one.stderr
    a = json.loads((run / "eval" / "val-best.json").read_text())["metrics"]
    (run / "eval" / "val-best.json").unlink()
    two = torchrun([str(run), "split=val"], tmp_path, "mtl_cli.cli.evaluate")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("written to") == 1  # rank 0 reports
    b = json.loads((run / "eval" / "val-best.json").read_text())["metrics"]
    for t in a:
        for m in a[t]:
            assert abs(a[t][m] - b[t][m]) <= 1e-4 * max(1.0, abs(a[t][m])), (t, m, a[t][m], b[t][m])  # float32 sums


def test_a_sweep_in_two_processes_runs_each_job_once(tmp_path):
    done = mtl(
        ["-m", *SMALL, "trainer.max_epochs=1", "trainer.devices=2", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sw'}"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for j in jobs:
        assert (tmp_path / "sw" / j / "summary.json").is_file()
    assert not list(tmp_path.glob("outputs"))  # the second process's Hydra wrote nowhere here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_slurm_style_start_with_one_task_per_process(tmp_path):
    """What srun starts: one task per process, rank and size from SLURM_* (MTL_SLURM_DDP=1),
    the rendezvous address from MASTER_ADDR/MASTER_PORT (docs/distributed.md)."""
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(
            ENV,
            SLURM_NTASKS="2",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            MTL_SLURM_DDP="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mtl_cli.cli.train",
                    *SMALL,
                    "trainer.max_epochs=1",
                    f"run_dir={tmp_path / 'run'}",
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 256 // (2 * 16)


def test_prediction_in_two_processes_equals_one(tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    assert mtl(SMALL + ["trainer.max_epochs=1", f"run_dir={run}"], tmp_path).returncode == 0
    (tmp_path / "imgs").mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(7):  # 7 files: shards of 4 and 3
        x = (torch.rand(12, 12, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(x).save(tmp_path / "imgs" / f"img{i}.png")
    args = [str(run), f"input={tmp_path / 'imgs'}"]
    one = mtl(args + [f"output={tmp_path / 'one.csv'}"], tmp_path, module="mtl_cli.cli.predict")
    assert one.returncode == 0, one.stderr
    two = torchrun(args + [f"output={tmp_path / 'two.csv'}"], tmp_path, "mtl_cli.cli.predict")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("written to") == 1
    a = (tmp_path / "one.csv").read_text().splitlines()
    b = (tmp_path / "two.csv").read_text().splitlines()
    assert len(a) == len(b) == 8 and a[0] == b[0]  # the same rows, in the files' order
    for ra, rb in zip(a[1:], b[1:]):
        assert ra.split(",")[0] == rb.split(",")[0]
        for x, y in zip(ra.split(",")[1:], rb.split(",")[1:]):
            try:
                assert abs(float(x) - float(y)) <= 1e-5
            except ValueError:
                assert x == y
