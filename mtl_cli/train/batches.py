"""DataLoaders over the sample-dict contract, and moving batches to a device."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate


def _identity(batch):
    return batch


def make_loader(
    ds: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int, device: torch.device
) -> DataLoader:
    """A DataLoader; datasets with ``__getitems__`` (in-memory) hand over whole batches, so no
    per-sample collation runs. Shuffling uses its own seeded generator (reproducible order)."""
    batched = hasattr(ds, "__getitems__")
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
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
