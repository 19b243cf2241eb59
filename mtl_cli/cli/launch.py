"""mtl-train with several processes: joining the process group that torchrun (or Slurm) set up,
and ``trainer.devices=N``, which starts N processes on this machine through torch's own elastic
launcher (what ``torchrun --standalone --nproc_per_node=N`` does).

Every process runs the same command line: the checks, Hydra and the run. Rank 0 writes the run
directory; the other ranks point Hydra's own outputs at a private temporary directory and get the
run directory from rank 0 (``mtl_cli.cli.train._hydra_task``).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import uuid

from ..errors import ConfigError, Problem

EXIT_INTERRUPTED = 3


def _last_value(argv: list[str], key: str) -> str | None:
    found = None
    for a in argv:
        if a.lstrip("+").startswith(key + "="):
            found = a.split("=", 1)[1]
    return found


def requested_devices(argv: list[str]) -> int | str:
    """``trainer.devices`` of the composed config (``auto`` or a number of processes)."""
    from ..config.compose import compose

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        return compose(overrides).trainer.devices
    except Exception:  # noqa: BLE001 - the pre-check reported every problem of the command line already
        return "auto"


def join_group(argv: list[str]):
    """The process group the environment describes (a one-process Comm without one), with the
    backend and timeout of the command line (``trainer.dist_backend``, ``trainer.dist_timeout_s``)."""
    from ..train import distributed

    if distributed.environment() is None:
        return distributed.current()
    backend = _last_value(argv, "trainer.dist_backend") or "auto"
    timeout = float(_last_value(argv, "trainer.dist_timeout_s") or 300)
    if backend == "nccl":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                [
                    Problem(
                        "trainer.dist_backend",
                        "NCCL needs CUDA GPUs, and this machine has none",
                        "nccl",
                        allowed="auto or gloo on CPUs",
                        fix="set trainer.dist_backend=auto (gloo on CPUs)",
                    )
                ]
            )
    comm = distributed.setup(backend, timeout)
    devices = requested_devices(argv)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", comm.world))
    if isinstance(devices, int) and devices != local:
        raise ConfigError(
            [
                Problem(
                    "trainer.devices",
                    f"the launcher started {local} processes on this machine, not {devices}",
                    devices,
                    fix="leave trainer.devices=auto under torchrun or Slurm (the launcher decides)",
                )
            ]
        )
    return comm


def hydra_overrides_for(comm) -> list[str]:
    """Hydra's own outputs of a process other than rank 0 go to a private temporary directory
    (removed at exit): only rank 0 writes the run directory."""
    if not comm.active or comm.is_main:
        return []
    tmp = tempfile.mkdtemp(prefix=f"mtl-rank{comm.rank}-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return [f"hydra.run.dir={tmp}", f"hydra.sweep.dir={tmp}", "hydra.output_subdir=null"]


def relaunch(devices: int, argv: list[str]) -> int:
    """Run this command line in ``devices`` processes on this machine (torch's elastic launcher,
    as ``torchrun --standalone``); returns the exit code: the workers' own when they agree (2, 3),
    else 1. A SIGTERM or Ctrl-C reaches the workers, which write last.pt and stop (exit 3)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    for name in list(logging.root.manager.loggerDict):  # the workers report themselves; the agent says it again
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "mtl_cli.cli.train", *argv)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        return codes.pop() if len(codes) == 1 and codes <= {2, 3} else 1
    except SignalException:
        return EXIT_INTERRUPTED
    return 0
