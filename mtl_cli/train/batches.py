"""DataLoaders over the sample-dict contract, and moving batches to a device."""

from __future__ import annotations

import functools
import os
import signal
import threading

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .distributed import rank_order, shard

#: the signals that ask a run to stop; only the main process answers them (see ``Loader``)
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
#: workers can tell who sent a signal (Linux): they ignore stop signals from anyone but the main process
_CAN_SORT_SIGNALS = hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwaitinfo")


def _identity(batch):
    return batch


class PassSampler(Sampler[int]):
    """The sample order of one pass over a dataset, a function of (seed, pass number) only, that
    can start part-way: ``set_pass(p, start)`` then iterate. A resumed run opens the pass it was in
    at the sample it had reached, and gets exactly the batches the uninterrupted run got.

    ``len()`` is always the full pass (DataLoader counts batches per epoch with it).

    With several processes (``world`` > 1) every process draws the same global order and takes
    its slice of each global batch of ``world x batch`` samples
    (:func:`mtl_cli.train.distributed.rank_order`): together they read what one process with the
    global batch would.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, batch: int = 1, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.batch, self.rank, self.world = batch, rank, world
        self.pass_no, self.start = 0, 0
        self._len = n if world == 1 else len(rank_order(torch.arange(n), batch, rank, world))

    def set_pass(self, pass_no: int, start: int = 0) -> None:
        self.pass_no, self.start = pass_no, start

    def order(self, pass_no: int) -> torch.Tensor:
        if not self.shuffle:
            full = torch.arange(self.n)
        else:
            g = torch.Generator().manual_seed(pass_seed(self.seed, pass_no))
            full = torch.randperm(self.n, generator=g)
        return rank_order(full, self.batch, self.rank, self.world)

    def __iter__(self):
        return iter(self.order(self.pass_no)[self.start :].tolist())

    def __len__(self) -> int:
        return self._len


def pass_seed(seed: int, pass_no: int) -> int:
    """A 63-bit seed per (run seed, pass), well spread for nearby values of either."""
    x = (seed * 0x9E3779B97F4A7C15 + (pass_no + 1) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 29)) >> 1


class Loader(DataLoader):
    """A DataLoader whose worker processes leave SIGINT and SIGTERM to the main process.

    A signal sent to the whole process group (Ctrl-C in a terminal; ``timeout``, Slurm and systemd
    with SIGTERM) reaches the workers as well. Torch's workers die of a SIGTERM that their parent
    did not send, and the main process then fails with "DataLoader worker ... is killed by
    signal"; with SIGINT every worker would print the run's stop message too. Here the stop
    signals are blocked in the main thread while the workers start (so a worker never runs with
    them unblocked, whenever the signal comes), and :func:`worker_init` keeps them blocked and
    lets a thread take them: a SIGTERM from the main process (how it shuts down a stuck worker,
    as torch's own handler allows) ends the worker, every other stop signal is dropped. Only the
    main process answers: it finishes the step, writes last.pt and exits 3.

    Where signals cannot be told apart by sender (no ``sigwaitinfo``: macOS, Windows) the workers
    ignore SIGINT only. Data order is untouched: it comes from the main process's sampler.
    """

    def _get_iterator(self):
        if self.num_workers == 0 or not _CAN_SORT_SIGNALS:
            return super()._get_iterator()
        # the workers start (fork or spawn) with the stop signals blocked and inherit that mask;
        # a signal that arrives meanwhile waits, and the main process gets it right after
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super()._get_iterator()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def close(self) -> None:
        """End the worker processes now (persistent workers otherwise live until the loader is
        garbage: later, in a process that goes on, e.g. a notebook or a test session)."""
        it = getattr(self, "_iterator", None)
        self._iterator = None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def worker_init(worker_id: int, main_pid: int) -> None:
    """``worker_init_fn`` of every :class:`Loader`: stop signals are for the main process.

    The signals stay blocked in the worker; a daemon thread takes them one by one with
    ``sigwaitinfo`` and ends the worker (exit 0, as torch's own handler does) only for a SIGTERM
    from the main process or the worker's parent. No random state is touched."""
    if not _CAN_SORT_SIGNALS:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # already blocked when started by Loader
    senders = {main_pid, os.getppid()}
    threading.Thread(target=_take_stop_signals, args=(senders,), name="mtl-worker-signals", daemon=True).start()


def _take_stop_signals(senders: set[int]) -> None:
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if info.si_signo == signal.SIGTERM and info.si_pid in senders:
            os._exit(0)  # the main process shuts this worker down


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A :class:`Loader`; datasets with ``__getitems__`` (in-memory) hand over whole batches, so no
    per-sample collation runs. Training loaders (``shuffle``) draw their order from a
    :class:`PassSampler`, so it is reproducible and resumable mid-pass, whatever the number of
    workers. Worker processes leave SIGINT/SIGTERM to the main process (see :class:`Loader`).
    With several processes, a training loader reads this process's slice of every global batch,
    and an evaluation loader (``shuffle=False``) its contiguous shard of the split."""
    batched = hasattr(ds, "__getitems__")
    n = len(ds)  # type: ignore[arg-type]  # our datasets are sized
    sampler: Sampler[int] | list[int] | None
    if shuffle:
        sampler = PassSampler(n, seed, True, batch_size, rank, world)
    else:
        sampler = list(shard(n, rank, world)) if world > 1 else None
    return Loader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),  # worker seeds (re-seeded per pass by the stream)
        num_workers=num_workers,
        collate_fn=_identity if batched else default_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        worker_init_fn=functools.partial(worker_init, main_pid=os.getpid()) if num_workers > 0 else None,
        drop_last=False,
    )


def to_device(batch: dict, device: torch.device):
    """(inputs, targets, masks) dicts on ``device``; no-op copies on CPU."""
    nb = device.type == "cuda"
    inputs = {k: v.to(device, non_blocking=nb) for k, v in batch["inputs"].items()}
    targets = {k: v.to(device, non_blocking=nb) for k, v in batch["targets"].items()}
    masks = {k: v.to(device, non_blocking=nb) for k, v in batch["masks"].items()}
    return inputs, targets, masks
