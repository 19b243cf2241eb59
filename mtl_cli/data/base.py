"""Data contract shared by every source.

A *source* (one file in ``mtl_cli/data/sources/`` registered in ``SOURCES``) is built from the
``data`` config node: ``name`` selects the class, the other keys are its constructor arguments.

- ``describe()`` is cheap (reads headers only) and returns a :class:`DataSpec`: the inputs and the
  targets the source offers. Validation uses it to check that every task names a real target
  before anything heavy is loaded.
- ``load()`` returns the splits ``{"train": ds, "val": ds, "test": ds}``.

Every dataset yields samples of the form::

    {"inputs": {input_key: Tensor}, "targets": {target: Tensor}, "masks": {target: bool Tensor[]}}

A missing label is ``masks[target] == False`` (the target tensor then holds any filler value):
never a silent zero. Dense targets may also mark single pixels as missing with ``ignore_index``
(segmentation) or NaN (dense regression).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError, Problem

SPLITS = ("train", "val", "test")


@dataclass
class InputSpec:
    name: str
    shape: tuple[int, ...]  # per sample, e.g. (3, 32, 32) or (n_features,)
    modality: str = "image"  # image | tabular | signal


@dataclass
class TargetSpec:
    name: str
    kind: str  # the task kind this target suits: classification, binary, multilabel, ...
    shape: tuple[int, ...] = ()  # per sample: () scalar, (k,) vector, (H, W) mask, (1, H, W) map
    num_classes: int | None = None  # classes (classification, segmentation) or labels (multilabel)
    class_names: list[str] | None = None
    ignore_index: int | None = None  # segmentation pixels to ignore


@dataclass
class DataSpec:
    inputs: dict[str, InputSpec]
    targets: dict[str, TargetSpec]
    artifacts: dict[str, Any] = field(default_factory=dict)  # e.g. label maps, saved in the run dir


class DataSource:
    """Base class of data sources. Subclasses take their config keys as typed __init__ args."""

    def describe(self) -> DataSpec:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self) -> dict[str, Dataset]:  # pragma: no cover - interface
        raise NotImplementedError


class InMemoryDataset(Dataset):
    """Tensors with a leading sample dimension. ``__getitems__`` returns a whole batch at once,
    so a DataLoader over it costs one gather per tensor instead of a Python loop per sample."""

    def __init__(
        self,
        inputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor] | None = None,
    ):
        sizes = {t.shape[0] for t in list(inputs.values()) + list(targets.values())}
        if len(sizes) != 1:
            raise ValueError(f"all tensors need the same number of samples, got sizes {sizes}")
        self.n = sizes.pop()
        self.inputs = inputs
        self.targets = targets
        masks = dict(masks or {})
        for k in targets:
            if k not in masks:
                masks[k] = torch.ones(self.n, dtype=torch.bool)
        self.masks = masks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {
            "inputs": {k: v[i] for k, v in self.inputs.items()},
            "targets": {k: v[i] for k, v in self.targets.items()},
            "masks": {k: v[i] for k, v in self.masks.items()},
        }

    def __getitems__(self, idx: Sequence[int]) -> dict:
        index = torch.as_tensor(idx, dtype=torch.long)
        return {
            "inputs": {k: v.index_select(0, index) for k, v in self.inputs.items()},
            "targets": {k: v.index_select(0, index) for k, v in self.targets.items()},
            "masks": {k: v.index_select(0, index) for k, v in self.masks.items()},
        }

    def subset(self, idx: torch.Tensor) -> InMemoryDataset:
        return InMemoryDataset(
            {k: v[idx] for k, v in self.inputs.items()},
            {k: v[idx] for k, v in self.targets.items()},
            {k: v[idx] for k, v in self.masks.items()},
        )


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, torch.Tensor]:
    """Seeded random split of ``range(n)`` into train/val/test index tensors."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    return {
        "val": perm[:n_val],
        "test": perm[n_val : n_val + n_test],
        "train": perm[n_val + n_test :],
    }


def check_nonempty(splits: dict[str, Dataset], where: str, fix: str | None = None) -> None:
    """DataError naming every split without samples (and the size of each split)."""
    sizes = {s: len(ds) for s, ds in splits.items()}
    empty = [s for s, n in sizes.items() if n == 0]
    if empty:
        raise DataError(
            [
                Problem(
                    key=where,
                    message=f"split(s) {', '.join(empty)} have no samples (samples per split: "
                    + ", ".join(f"{s} {n}" for s, n in sizes.items()) + ")",
                    fix=fix or "use more data, or raise data.val_fraction / data.test_fraction so "
                    "that every split gets at least one sample",
                )
            ]
        )


def _rename(sample: dict, prefix: str) -> dict:
    return {part: {f"{prefix}{k}": v for k, v in sample[part].items()} for part in ("inputs", "targets", "masks")}


class _Prefixed(Dataset):
    """A dataset whose input and target keys carry a prefix (see :func:`with_prefix`)."""

    def __init__(self, ds: Dataset, prefix: str):
        self.ds, self.prefix = ds, prefix
        if hasattr(ds, "__getitems__"):
            self.__getitems__ = lambda idx: _rename(ds.__getitems__(idx), prefix)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return _rename(self.ds[i], self.prefix)


def with_prefix(ds: Dataset, prefix: str) -> Dataset:
    """``ds`` with every input, target and mask key renamed to ``prefix + key``, so that samples
    of several datasets can share one batch dict (two datasets may both have an ``image``)."""
    if not prefix:
        return ds
    if isinstance(ds, InMemoryDataset):  # shares the tensors; keeps the fast batched path
        return InMemoryDataset(*(_rename({"inputs": ds.inputs, "targets": ds.targets, "masks": ds.masks},
                                         prefix)[part] for part in ("inputs", "targets", "masks")))
    return _Prefixed(ds, prefix)


# --- helpers of the generated sources (shapes, tones) ----------------------------------------------
def split_size_problems(sizes: dict[str, int]) -> list[Problem]:
    """``data.<split>_size`` values below 1."""
    return [Problem(f"data.{s}_size", "a split needs at least one sample", n, "an integer >= 1",
                    f"set data.{s}_size to 1 or more") for s, n in sizes.items() if n < 1]


def missing_label_problems(missing: dict[str, float], targets: Sequence[str], source: str) -> list[Problem]:
    """``data.missing_labels`` entries naming an unknown target or a fraction outside [0, 1]."""
    out = []
    for target, frac in missing.items():
        key = f"data.missing_labels.{target}"
        if target not in targets:
            out.append(Problem(key, f"not a target of the {source} source", target, ", ".join(targets),
                               "name one of the allowed targets"))
        elif not isinstance(frac, (int, float)) or not 0.0 <= float(frac) <= 1.0:
            out.append(Problem(key, "a fraction of samples must be in [0, 1]", frac, "a number in [0, 1]",
                               f"e.g. {key}=0.5"))
    return out


def missing_label_masks(n: int, missing: dict[str, float], seed: int) -> dict[str, torch.Tensor]:
    """Seeded masks [n] that drop the given fraction of each target's labels (False = missing)."""
    g = torch.Generator().manual_seed(seed)
    return {target: torch.rand(n, generator=g) >= frac for target, frac in missing.items()}
