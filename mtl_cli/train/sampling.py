"""Which dataset feeds each training step when tasks bring their own datasets.

Tasks that share a dataset share its batches. With one dataset an epoch is one pass over it, as
usual. With several, ``trainer.sampling`` picks the dataset of each step:

- ``round_robin``: the datasets in turn (task order of first appearance).
- ``proportional``: at random with probability proportional to the dataset's size in batches.
- ``temperature``: at random with probability proportional to ``n_i ** (1 / T)``
  (``trainer.temperature``): T = 1 is proportional, a large T tends to uniform, so small datasets
  are seen more often than their size alone would give.
- ``all``: every step takes one batch from every dataset (a mixed batch), so each step has a loss
  for every task.

``trainer.epoch_length`` says how many steps an epoch has: ``largest`` (default) or ``smallest``
means the steps in which that dataset is drawn as many times as it has batches (in expectation
for random sampling): ``n_ref / p_ref`` steps, where ``p_ref`` is the dataset's probability per
step (1 for ``all``). An integer is a fixed number of steps. Smaller datasets are cycled,
reshuffled at each pass; a seeded generator makes the order reproducible.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import torch
from torch.utils.data import DataLoader

from .batches import PassSampler, pass_seed


def merge(batches: list[dict]) -> dict:
    """One batch dict from batches of different datasets (their keys are disjoint)."""
    if len(batches) == 1:
        return batches[0]
    return {part: {k: v for b in batches for k, v in b[part].items()} for part in ("inputs", "targets", "masks")}


def batch_size_of(batch: dict) -> int:
    return next(iter(batch["inputs"].values())).shape[0]


class MicroBatch(NamedTuple):
    """One step of the stream: a batch, the dataset(s) it comes from, and its number of samples."""

    batch: dict
    datasets: tuple[str, ...]
    n_samples: int


class Group:
    """The micro-batches of one optimizer step. ``len()`` is known before any is drawn; iterating
    draws them from the stream, one at a time (once)."""

    def __init__(self, size: int, micro_batches: Iterator[MicroBatch]):
        self.size, self.micro_batches = size, micro_batches

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[MicroBatch]:
        return self.micro_batches


class TrainStream:
    """Training batches, one epoch at a time: ``for group in stream.groups(k)`` (one group of ``k``
    micro-batches per optimizer step), or ``for batch, datasets, n_samples in stream.epoch()``.

    Where the stream stands is a few numbers (``state_dict``): for each dataset the pass it is in
    and the batches taken from that pass, the steps done in the current epoch, and the sampling
    generator as it was when the epoch began. A stream restored from them continues with exactly
    the batches the uninterrupted stream would have given (pass orders come from
    :class:`~mtl_cli.train.batches.PassSampler`, a function of the seed and the pass number).
    """

    def __init__(
        self,
        loaders: dict[str, DataLoader],
        sampling: str = "round_robin",
        temperature: float = 2.0,
        epoch_length: int | str = "largest",
        seed: int = 0,
        limit: int | None = None,
    ):
        self.loaders = loaders
        self.names = list(loaders)
        self.seed = seed
        self.sampling = sampling if len(loaders) > 1 else "single"
        self.sizes = {n: len(dl) for n, dl in loaders.items()}
        self.probs = self._probabilities(temperature)
        self.steps = self._steps(epoch_length)
        if limit is not None:
            self.steps = min(self.steps, limit)
        self.g = torch.Generator().manual_seed(seed + 104729)
        self._iters: dict[str, Iterator] = {}
        self._turn = 0
        self.pass_no = {n: 0 for n in self.names}  # the pass each dataset is in
        self.taken = {n: 0 for n in self.names}  # batches taken from that pass
        self.position = 0  # steps done in the current epoch
        self._epoch_start: tuple[torch.Tensor, int] | None = None  # (generator state, turn) at its start

    def _probabilities(self, temperature: float) -> dict[str, float]:
        n = self.sizes
        if self.sampling in ("single", "all"):
            return {k: 1.0 for k in n}
        if self.sampling == "round_robin":
            return {k: 1.0 / len(n) for k in n}
        power = 1.0 if self.sampling == "proportional" else 1.0 / temperature
        raw = {k: float(v) ** power for k, v in n.items()}
        total = sum(raw.values())
        return {k: v / total for k, v in raw.items()}

    def _steps(self, epoch_length) -> int:
        if self.sampling == "single":
            return self.sizes[self.names[0]]
        if isinstance(epoch_length, int):
            return epoch_length
        pick = max if epoch_length == "largest" else min
        ref = pick(self.names, key=lambda k: self.sizes[k])
        return max(1, math.ceil(self.sizes[ref] / self.probs[ref] - 1e-9))

    def __len__(self) -> int:
        return self.steps

    def _open(self, name: str) -> Iterator:
        """An iterator over the rest of the dataset's current pass."""
        loader = self.loaders[name]
        salt = self.names.index(name)
        if isinstance(loader.sampler, PassSampler):
            loader.sampler.set_pass(self.pass_no[name], self.taken[name] * loader.batch_size)
        if loader.generator is not None:  # worker seeds: a function of the pass as well
            loader.generator.manual_seed(pass_seed(self.seed + salt, self.pass_no[name]))
        it = iter(loader)
        self._iters[name] = it
        return it

    def _next(self, name: str) -> dict:
        it = self._iters.get(name) or self._open(name)
        try:
            batch = next(it)
        except StopIteration:  # a new pass, in a new order
            self.pass_no[name] += 1
            self.taken[name] = 0
            batch = next(self._open(name))
        self.taken[name] += 1
        return batch

    def _new_pass(self, name: str) -> None:
        if self.taken[name]:
            self.pass_no[name] += 1
            self.taken[name] = 0
            self._iters.pop(name, None)

    def _order(self) -> list[list[str]]:
        """The dataset(s) of each step of one epoch."""
        if self.sampling == "single":
            return [self.names] * self.steps
        if self.sampling == "all":
            return [self.names] * self.steps
        if self.sampling == "round_robin":
            out = [[self.names[(self._turn + i) % len(self.names)]] for i in range(self.steps)]
            self._turn = (self._turn + self.steps) % len(self.names)
            return out
        p = torch.tensor([self.probs[k] for k in self.names], dtype=torch.float64)
        idx = torch.multinomial(p, self.steps, replacement=True, generator=self.g).tolist()
        return [[self.names[i]] for i in idx]

    def groups(self, size: int) -> Iterator[Group]:
        """The rest of the current epoch (all of it unless restored mid-epoch) in groups of
        ``size`` micro-batches, one group per optimizer step; the epoch's last group holds what is
        left and may be shorter. Groups start at the position the stream is at, so a stream
        saved between groups (the trainer checkpoints only between optimizer steps) continues
        with the same groups."""
        order = self._epoch_order()
        for start in range(self.position, len(order), size):
            stop = min(start + size, len(order))
            yield Group(stop - start, (self._draw(order, i) for i in range(start, stop)))
        self.position = 0  # the epoch ran to its end

    def epoch(self) -> Iterator[MicroBatch]:
        """The rest of the current epoch, one micro-batch at a time."""
        for group in self.groups(1):
            yield from group

    def _epoch_order(self) -> list[list[str]]:
        """The dataset(s) of each step of the current epoch: a new epoch's order, or, restored
        mid-epoch, the order the epoch had."""
        if self.position == 0 or self._epoch_start is None:
            self.position = 0
            self._epoch_start = (self.g.get_state(), self._turn)
            if self.sampling == "single":  # with one dataset an epoch is one pass
                self._new_pass(self.names[0])
        else:
            self.g.set_state(self._epoch_start[0])
            self._turn = self._epoch_start[1]
        return self._order()

    def _draw(self, order: list[list[str]], i: int) -> MicroBatch:
        """Step ``i`` of the epoch: a batch from each of its datasets, merged."""
        parts = [self._next(n) for n in order[i]]
        self.position = i + 1
        return MicroBatch(merge(parts), tuple(order[i]), sum(batch_size_of(b) for b in parts))

    def end_epoch(self) -> None:
        """Mark the epoch done (also when training stopped part-way, at max_steps)."""
        self.position = 0

    def state_dict(self) -> dict:
        if self.position == 0 or self._epoch_start is None:  # between epochs: the next one starts from here
            gen, turn = self.g.get_state(), self._turn
        else:
            gen, turn = self._epoch_start
        return {
            "pass_no": dict(self.pass_no),
            "taken": dict(self.taken),
            "position": self.position,
            "epoch_generator": gen,
            "epoch_turn": turn,
        }

    def load_state_dict(self, state: dict) -> None:
        self.pass_no = {n: int(state["pass_no"][n]) for n in self.names}
        self.taken = {n: int(state["taken"][n]) for n in self.names}
        self.position = int(state["position"])
        if self.position == 0:
            self.g.set_state(state["epoch_generator"])
            self._turn = int(state["epoch_turn"])
            self._epoch_start = None
        else:
            self._epoch_start = (state["epoch_generator"], int(state["epoch_turn"]))
        self._iters.clear()

    def describe(self) -> dict:
        return {
            "sampling": self.sampling,
            "steps_per_epoch": self.steps,
            "batches": dict(self.sizes),
            "probabilities": {k: round(v, 4) for k, v in self.probs.items()},
        }
