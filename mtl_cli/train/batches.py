"""DataLoaders over the sample-dict contract, and moving batches to a device."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


def _identity(batch):
    return batch


class PassSampler(Sampler[int]):
    """The sample order of one pass over a dataset, a function of (seed, pass number) only, that
    can start part-way: ``set_pass(p, start)`` then iterate. A resumed run opens the pass it was in
    at the sample it had reached, and gets exactly the batches the uninterrupted run got.

    ``len()`` is always the full pass (DataLoader counts batches per epoch with it).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.pass_no, self.start = 0, 0

    def set_pass(self, pass_no: int, start: int = 0) -> None:
        self.pass_no, self.start = pass_no, start

    def order(self, pass_no: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(pass_seed(self.seed, pass_no))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        return iter(self.order(self.pass_no)[self.start :].tolist())

    def __len__(self) -> int:
        return self.n


def pass_seed(seed: int, pass_no: int) -> int:
    """A 63-bit seed per (run seed, pass), well spread for nearby values of either."""
    x = (seed * 0x9E3779B97F4A7C15 + (pass_no + 1) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 29)) >> 1


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, device: torch.device
) -> DataLoader:
    """A DataLoader; datasets with ``__getitems__`` (in-memory) hand over whole batches, so no
    per-sample collation runs. Training loaders (``shuffle``) draw their order from a
    :class:`PassSampler`, so it is reproducible and resumable mid-pass."""
    batched = hasattr(ds, "__getitems__")
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=PassSampler(len(ds), seed, shuffle) if shuffle else None,
        generator=torch.Generator().manual_seed(seed),  # worker seeds (re-seeded per pass by the stream)
        num_workers=num_workers,
        collate_fn=_identity if batched else default_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        drop_last=False,
    )


def to_device(batch: dict, device: torch.device):
    """(inputs, targets, masks) dicts on ``device``; no-op copies on CPU."""
    nb = device.type == "cuda"
    inputs = {k: v.to(device, non_blocking=nb) for k, v in batch["inputs"].items()}
    targets = {k: v.to(device, non_blocking=nb) for k, v in batch["targets"].items()}
    masks = {k: v.to(device, non_blocking=nb) for k, v in batch["masks"].items()}
    return inputs, targets, masks
