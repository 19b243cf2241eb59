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
from typing import Iterator

import torch
from torch.utils.data import DataLoader


def merge(batches: list[dict]) -> dict:
    """One batch dict from batches of different datasets (their keys are disjoint)."""
    if len(batches) == 1:
        return batches[0]
    return {part: {k: v for b in batches for k, v in b[part].items()} for part in ("inputs", "targets", "masks")}


def batch_size_of(batch: dict) -> int:
    return next(iter(batch["inputs"].values())).shape[0]


class TrainStream:
    """Training batches, one epoch at a time: ``for batch, datasets, n_samples in stream.epoch()``."""

    def __init__(self, loaders: dict[str, DataLoader], sampling: str = "round_robin", temperature: float = 2.0,
                 epoch_length: int | str = "largest", seed: int = 0, limit: int | None = None):
        self.loaders = loaders
        self.names = list(loaders)
        self.sampling = sampling if len(loaders) > 1 else "single"
        self.sizes = {n: len(dl) for n, dl in loaders.items()}
        self.probs = self._probabilities(temperature)
        self.steps = self._steps(epoch_length)
        if limit is not None:
            self.steps = min(self.steps, limit)
        self.g = torch.Generator().manual_seed(seed + 104729)
        self._iters: dict[str, Iterator] = {}
        self._turn = 0

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

    def _next(self, name: str) -> dict:
        it = self._iters.get(name)
        if it is not None:
            try:
                return next(it)
            except StopIteration:
                pass
        self._iters[name] = iter(self.loaders[name])  # a new pass, reshuffled
        return next(self._iters[name])

    def _order(self) -> list[list[str]]:
        """The dataset(s) of each step of one epoch."""
        if self.sampling == "all":
            return [self.names] * self.steps
        if self.sampling == "round_robin":
            out = [[self.names[(self._turn + i) % len(self.names)]] for i in range(self.steps)]
            self._turn = (self._turn + self.steps) % len(self.names)
            return out
        p = torch.tensor([self.probs[k] for k in self.names], dtype=torch.float64)
        idx = torch.multinomial(p, self.steps, replacement=True, generator=self.g).tolist()
        return [[self.names[i]] for i in idx]

    def epoch(self) -> Iterator[tuple[dict, tuple[str, ...], int]]:
        if self.sampling == "single":
            name = self.names[0]
            for i, batch in enumerate(self.loaders[name]):
                if i >= self.steps:
                    break
                yield batch, (name,), batch_size_of(batch)
            return
        for names in self._order():
            parts = [self._next(n) for n in names]
            yield merge(parts), tuple(names), sum(batch_size_of(b) for b in parts)

    def describe(self) -> dict:
        return {"sampling": self.sampling, "steps_per_epoch": self.steps,
                "batches": dict(self.sizes), "probabilities": {k: round(v, 4) for k, v in self.probs.items()}}
