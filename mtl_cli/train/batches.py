"""DataLoaders over the sample-dict contract, and moving batches to a device."""

from __future__ import annotations

import functools
import os
import signal
import threading
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torch.utils.data._utils import signal_handling

from .cpus import usable_cpus
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
        if self.num_workers > 0:
            _no_raising_sigchld_handler()
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
            # torch ends a worker that did not stop in time with SIGTERM; one stuck before
            # worker_init (stop signals still blocked) would survive it, and the interpreter
            # would then wait for it forever at exit
            for w in getattr(it, "_workers", []):
                if w.is_alive():
                    w.kill()
                    w.join()


def _no_raising_sigchld_handler() -> None:
    """Keep torch from installing its SIGCHLD handler for DataLoader workers.

    That handler raises "DataLoader worker ... is killed by signal" in the main process wherever
    it is when any child process ends after a worker died: inside ``torch.save`` (a checkpoint
    write then fails as if the disk were full), or inside logging's fork hooks (the error is
    swallowed and logging's module lock stays held). Instead the trainer asks
    :func:`check_workers` at safe points (after every step, before every checkpoint), and a
    loader waiting for a batch notices a dead worker itself (torch polls its workers every few
    seconds). A torch DataLoader that started workers earlier in the process keeps torch's
    handler in place."""
    signal_handling._SIGCHLD_handler_set = True


def check_workers() -> None:
    """Raise torch's RuntimeError ("DataLoader worker (pid N) is killed by signal: ...") when a
    worker process of a loader in use has died; nothing otherwise. One ``waitid`` per worker
    (without reaping it)."""
    signal_handling._error_if_any_worker_fails()


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


#: the most worker processes ``num_workers=auto`` starts per loader
AUTO_WORKERS_MAX = 8


def auto_workers(ds: Dataset, local_processes: int = 1) -> int:
    """``trainer.num_workers=auto``: none for data held in memory (a batch is one gather; a
    worker would only add a copy between processes), else the usable CPUs of this process's
    share of the machine minus one (the training process), at most ``AUTO_WORKERS_MAX``."""
    if hasattr(ds, "__getitems__"):
        return 0
    share = usable_cpus() // max(1, local_processes)
    return max(0, min(AUTO_WORKERS_MAX, share - 1))


class DeviceDataset(Dataset):
    """A dataset held in memory (one with ``__getitems__``), copied once to ``device``
    (``trainer.data_on_device``): a batch is one gather on the device, with no copy per step.
    The samples, their order and values are those of the dataset it was made from."""

    def __init__(self, ds: Any, device: torch.device):
        self.n, self.device = len(ds), device
        whole = ds.__getitems__(list(range(self.n)))
        parts = ("inputs", "targets", "masks")
        self.parts = {part: {k: v.to(device) for k, v in whole[part].items()} for part in parts}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {part: {k: v[i] for k, v in d.items()} for part, d in self.parts.items()}

    def __getitems__(self, idx) -> dict:
        index = torch.as_tensor(idx, dtype=torch.long).to(self.device, non_blocking=True)
        return {part: {k: v.index_select(0, index) for k, v in d.items()} for part, d in self.parts.items()}


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int | str,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    local_processes: int = 1,
) -> DataLoader:
    """A :class:`Loader`; datasets with ``__getitems__`` (in-memory) hand over whole batches, so no
    per-sample collation runs. Training loaders (``shuffle``) draw their order from a
    :class:`PassSampler`, so it is reproducible and resumable mid-pass, whatever the number of
    workers. Worker processes leave SIGINT/SIGTERM to the main process (see :class:`Loader`).
    With several processes, a training loader reads this process's slice of every global batch,
    and an evaluation loader (``shuffle=False``) its contiguous shard of the split.
    ``num_workers``: a number, or ``auto`` (:func:`auto_workers`). Data already on ``device``
    (``trainer.data_on_device``) is read in the main process and never pinned."""
    batched = hasattr(ds, "__getitems__")
    on_device = getattr(ds, "device", torch.device("cpu")).type != "cpu"
    workers = auto_workers(ds, local_processes) if num_workers == "auto" else int(num_workers)
    if on_device:
        workers = 0
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
        num_workers=workers,
        collate_fn=_identity if batched else default_collate,
        pin_memory=device.type == "cuda" and not on_device,
        persistent_workers=workers > 0,
        worker_init_fn=functools.partial(worker_init, main_pid=os.getpid()) if workers > 0 else None,
        drop_last=False,
    )


def to_device(batch: dict, device: torch.device, channels_last: bool = False):
    """(inputs, targets, masks) dicts on ``device`` (non-blocking copies from pinned memory; no-op
    copies on CPU); ``channels_last``: 4-D floating inputs (images) in channels-last format."""
    nb = device.type == "cuda"
    inputs = {k: _input_to(v, device, nb, channels_last) for k, v in batch["inputs"].items()}
    targets = {k: v.to(device, non_blocking=nb) for k, v in batch["targets"].items()}
    masks = {k: v.to(device, non_blocking=nb) for k, v in batch["masks"].items()}
    return inputs, targets, masks


def _input_to(v: torch.Tensor, device: torch.device, non_blocking: bool, channels_last: bool) -> torch.Tensor:
    if channels_last and v.dim() == 4 and v.is_floating_point():
        return v.to(device, non_blocking=non_blocking, memory_format=torch.channels_last)
    return v.to(device, non_blocking=non_blocking)
