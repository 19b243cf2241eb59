"""Data parallelism on torch.distributed: the process group, the collectives the trainer and the
weighting methods use, and which samples each process reads.

A run with several processes is started by ``torchrun`` (or ``mtl-train trainer.devices=N``, which
starts torch's own elastic launcher, or a Slurm job with one task per GPU). Each process reads its
rank from the environment (torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, or Slurm's
``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``) and joins one process group: NCCL on GPUs,
gloo on CPUs.

The contract (docs/distributed.md):

- ``trainer.batch_size`` is per process; a step's global batch is ``world x batch_size`` samples:
  the global batch the one-process run with ``world x batch_size`` would take, split in
  consecutive slices (:func:`rank_order`);
- the [T] losses each process forms are rescaled so that their mean over processes is the
  global batch's masked mean (a task's labelled samples counted over every process), and every
  method sees that mean's value (identical everywhere) with the gradient of its own share
  (:meth:`Comm.global_losses`); averaging gradients over processes then gives the global batch's
  gradient for every loss-based scalarisation and for every gradient method's rows;
- only rank 0 writes the run directory.

:class:`Comm` wraps the collectives and counts the bytes each one moves (what docs/distributed.md's
table reports, measured in tests).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

#: environment variables that say this process is one of several
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class Comm:
    """The process group as the run uses it; a one-process run has ``world == 1`` and every
    collective is the identity (no process group is needed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: bytes moved per collective tag (all-reduce, broadcast, gather), for docs and tests
    bytes: Counter = field(default_factory=Counter)
    #: parameters whose gradients are already the same on every process this step
    synced: set[int] = field(default_factory=set)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # ------------------------------------------------------------------ collectives
    def all_reduce(self, t: torch.Tensor, op: str = "sum", tag: str = "all_reduce") -> torch.Tensor:
        """``t`` reduced over the processes (``sum``, ``avg``, ``max`` or ``min``), in place when it
        can be; the identity in one process."""
        if not self.active:
            return t
        self.bytes[tag] += t.numel() * t.element_size()
        if op == "avg":
            if self.backend == "nccl":
                dist.all_reduce(t, op=dist.ReduceOp.AVG)
            else:  # gloo has no AVG
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
                t.div_(self.world)
            return t
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
        return t

    def any(self, flag: bool, device: torch.device, tag: str = "flags") -> bool:
        """True on every process when ``flag`` is true on one (a stop signal, say)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.all_reduce(t, "max", tag).item())

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def on_main(self, fn):
        """``fn()`` run by rank 0 only, its result (or its error) given to every process: a user
        error raised there is raised again on every process (same type, same problems), any other
        failure as a TrainingError naming it, so no process waits in a collective for a rank 0
        that has stopped."""
        if not self.active:
            return fn()
        from ..errors import TrainingError, UserError

        if not self.is_main:
            kind, payload, cls = self.broadcast_object(None)
            if kind == "ok":
                return payload
            if kind == "user":
                raise cls(payload)
            raise TrainingError(f"rank 0 stopped: {payload}")
        try:
            out = fn()
        except UserError as e:
            self.broadcast_object(("user", e.problems, type(e)))
            raise
        except BaseException as e:
            self.broadcast_object(("fail", f"{type(e).__name__}: {e}", None))
            raise
        self.broadcast_object(("ok", out, None))
        return out

    # ------------------------------------------------------------------ the losses
    def global_losses(self, losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The [T] losses every method sees: the value is the global batch's masked mean (the same
        on every process), the gradient that of this process's share.

        ``losses`` are this process's masked means over its ``counts`` labelled samples per task.
        One all-reduce of ``[counts, losses x counts]`` gives each task's labelled samples and loss
        sum over all processes; this process's share ``world x sum_here / count_all`` averages over
        the processes to the global mean, and so do its gradients."""
        if not self.active:
            return losses
        c = counts.to(torch.float64)
        both = torch.cat([c, losses.detach().to(torch.float64) * c])
        self.all_reduce(both, "sum", "losses")
        n = losses.shape[0]
        total_count, total_sum = both[:n], both[n:]
        denom = total_count.clamp_min(1.0)
        share = (self.world * c / denom).to(losses.dtype)  # detached factors
        local = losses * share
        value = (total_sum / denom).to(losses.dtype)
        return value + (local - local.detach())

    # ------------------------------------------------------------------ gradients
    def start_step(self) -> None:
        self.synced.clear()

    def mark_synced(self, params) -> None:
        """These parameters' gradients are already equal on every process (e.g. the gradient
        engine all-reduced the task gradients they came from)."""
        self.synced.update(id(p) for p in params)

    def sync_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over the processes (one flat all-reduce), except
        those already synced this step. A parameter without a gradient on every process (a head
        of a dataset not drawn this step) keeps none, so the optimizer leaves it alone as in one
        process; one with a gradient somewhere counts the missing ones as zeros."""
        if not self.active:
            return
        todo = [p for p in params if id(p) not in self.synced]
        if not todo:
            return
        ref = todo[0]
        has = torch.tensor([p.grad is not None for p in todo], dtype=ref.dtype, device=ref.device)
        parts = [has] + [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in todo]
        flat = torch.cat(parts)
        self.all_reduce(flat, "avg", "parameter gradients")
        lo = len(todo)
        some = (flat[: len(todo)] > 0).tolist()  # one read: which parameters have a gradient somewhere
        for i, p in enumerate(todo):
            hi = lo + p.numel()
            if some[i]:  # the mean over the processes (zeros where one had none)
                p.grad = flat[lo:hi].view_as(p).clone() if p.grad is None else p.grad.copy_(flat[lo:hi].view_as(p))
            lo = hi
        self.mark_synced(todo)


def environment() -> dict[str, int] | None:
    """(rank, world, local rank) from torchrun's or Slurm's environment; None for one process."""
    env = os.environ
    if all(v in env for v in TORCHRUN_VARS) and int(env["WORLD_SIZE"]) > 1:
        return {"rank": int(env["RANK"]), "world": int(env["WORLD_SIZE"]), "local_rank": int(env["LOCAL_RANK"])}
    slurm = env.get("MTL_SLURM_DDP", "") == "1" or env.get("SUBMITIT_EXECUTOR") == "slurm"  # srun, or submitit
    if int(env.get("SLURM_NTASKS", "1")) > 1 and slurm:
        return {
            "rank": int(env["SLURM_PROCID"]),
            "world": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", "0")),
        }
    return None


_COMM = Comm()
_JOINED = False  # this process joined a process group (kept after teardown: how it must leave)


def current() -> Comm:
    """The process group of this process (a one-process Comm until :func:`setup` joined one)."""
    return _COMM


def setup(backend: str = "auto", timeout_s: float = 300.0) -> Comm:
    """Join the process group the environment describes (no-op for one process, or when joined).

    ``backend``: ``auto`` (NCCL when CUDA is available, else gloo), ``nccl`` or ``gloo``. With
    Slurm, ``MASTER_ADDR``/``MASTER_PORT`` must be set (docs/distributed.md shows how)."""
    global _COMM
    if _COMM.active:
        return _COMM
    env = environment()
    if env is None:
        return _COMM
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "MASTER_ADDR" not in os.environ:  # Slurm through submitit: it knows the first node and a port
        try:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        except Exception as e:  # noqa: BLE001 - said below, with the fix
            raise RuntimeError(
                "several processes from Slurm need MASTER_ADDR and MASTER_PORT (the first node and a free "
                f"port; see docs/distributed.md), and submitit could not set them: {e}"
            ) from e
    os.environ.setdefault("RANK", str(env["rank"]))
    os.environ.setdefault("WORLD_SIZE", str(env["world"]))
    os.environ.setdefault("LOCAL_RANK", str(env["local_rank"]))
    if backend == "nccl":
        torch.cuda.set_device(env["local_rank"])
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=env["rank"],
            world_size=env["world"],
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    global _JOINED
    _COMM, _JOINED = Comm(env["rank"], env["world"], env["local_rank"], backend), True
    atexit.register(teardown)  # leave the group cleanly when the process ends
    return _COMM


@contextlib.contextmanager
def leaving_cleanly():
    """An entry point's body (``mtl-train``, ``mtl-eval``, ``mtl-predict``): in a process that joined a process
    group, the process ends here, once the body is done, with the body's exit status: the exit
    hooks run (the group is left, run directories are unlocked, trackers end), logging and the
    standard streams are flushed, and ``os._exit`` skips the interpreter's finalisation. There, a
    C++ thread of the distributed stack, torn down in the wrong order, now and then aborts the
    process (SIGABRT, "terminate called without an active exception"; about one run in ten with
    gloo under load, torch 2.14) and turns exit status 0 or 2 into a crash. A process that never
    joined a group leaves as usual."""
    code: object = 0
    try:
        yield
    except SystemExit as e:
        if not _JOINED:
            raise
        code = e.code
    except BaseException:
        if not _JOINED:
            raise
        traceback.print_exc()
        code = 1
    if not _JOINED:
        return
    if code is None:
        code = 0
    elif not isinstance(code, int):  # SystemExit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(code)


def teardown() -> None:
    global _COMM
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - at exit, a group whose peers are gone: nothing to clean
            pass
    _COMM = Comm()


# ---------------------------------------------------------------------- which samples a process reads
def rank_order(order: torch.Tensor, batch: int, rank: int, world: int) -> torch.Tensor:
    """This process's samples of a pass whose global order is ``order``: global batch k is
    ``order[k W b : (k + 1) W b]`` (``W`` processes of ``b`` samples), and process ``rank`` takes
    its ``rank``-th consecutive slice; the last, shorter global batch is split as evenly as it can
    be (every process gets the same number of batches: a last global batch of fewer than ``W``
    samples is dropped)."""
    if world == 1:
        return order
    n, step = order.numel(), world * batch
    full, rest = divmod(n, step)
    parts = [order[k * step + rank * batch : k * step + (rank + 1) * batch] for k in range(full)]
    if rest >= world:
        tail = order[full * step :]
        sizes = [rest // world + (1 if r < rest % world else 0) for r in range(world)]
        lo = sum(sizes[:rank])
        parts.append(tail[lo : lo + sizes[rank]])
    return torch.cat(parts) if parts else order[:0]


def batches_per_pass(n: int, batch: int, world: int) -> int:
    """Batches each process takes in one pass of ``n`` samples (see :func:`rank_order`)."""
    full, rest = divmod(n, world * batch)
    return full + (1 if rest >= world else 0)


def shard(n: int, rank: int, world: int) -> range:
    """The evaluation samples of process ``rank``: a contiguous shard, sizes differing by at most
    one, no sample twice and none left out (metrics reduce to the one-process figures)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))
