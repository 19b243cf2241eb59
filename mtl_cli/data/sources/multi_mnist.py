"""MultiMNIST and MultiFashion: two overlaid items, one task per item (Sener & Koltun, 2018).

Construction, following "Multi-Task Learning as Multi-Objective Optimization" (Sener & Koltun,
NeurIPS 2018, after Sabour et al., 2017) and the authors' released loader:

1. every item of the base split (MNIST digits or Fashion-MNIST products, 28 x 28) is the *left*
   item of exactly one sample (``pairs_per_item`` samples, each with a partner of its own); its
   partner, the *right* item, is another item of the same split drawn uniformly at random (seeded;
   never the item itself). Pareto MTL's released data (Lin et al., 2019: 120,000 training and
   20,000 test canvases from MNIST's 60,000 and 10,000) is the size of ``pairs_per_item: 2``;
2. on an empty 36 x 36 canvas the left item is placed at the top-left (rows and columns 0..27)
   and the right item at the bottom-right (rows and columns 6..33); where they overlap the
   pixel-wise maximum is kept;
3. the canvas is resized to ``image_size`` x ``image_size`` with nearest-neighbour interpolation
   (the paper uses 28 x 28; ``image_size: 36`` keeps the canvas as it is).

Targets ``left`` and ``right``: the classes of the two items (classification, 10 classes each).
Input ``image``: float32 [1, S, S] in [0, 1].

Splits: ``test`` is built from the base test split. ``train`` and ``val`` come from the base train
split: its items are first divided by the seeded ``val_fraction``, then paired *within* each part,
so no base item appears in both train and val. ``train_size`` / ``test_size`` keep only the first
N items of the base train / test split. Same ``seed``, same data; another seed, other pairs.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ...config.params import PosInt, Seed
from ...errors import DataError, Problem
from ...registry import SOURCES
from ..base import (
    IMAGE_SUFFIXES,
    DataSource,
    DataSpec,
    Fraction,
    InMemoryDataset,
    InputSpec,
    PreparedInputs,
    TargetSpec,
    check_nonempty,
    file_stems,
    image_to_tensor,
    read_image_file,
    size_problem,
    split_indices,
)
from .torchvision_sets import SETS, Root, first, load_mnist_like, require_files, resolve

CANVAS = 36  # side of the canvas the two 28 x 28 items are placed on
ITEM = 28
LEFT_AT = 0  # top-left corner (row = column) of the left item on the canvas
RIGHT_AT = 6  # top-left corner (row = column) of the right item on the canvas
Base = Literal["MNIST", "FashionMNIST"]
BASES = get_args(Base)


def pair_partners(n: int, generator: torch.Generator) -> torch.Tensor:
    """For each item i in range(n) a partner index != i, uniform over the other items."""
    shift = torch.randint(1, n, (n,), generator=generator)
    return (torch.arange(n) + shift) % n


def overlay(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] left and right items -> uint8 [N, 36, 36] canvases (max where overlapping)."""
    canvas = torch.zeros(left.shape[0], CANVAS, CANVAS, dtype=left.dtype)
    canvas[:, LEFT_AT : LEFT_AT + ITEM, LEFT_AT : LEFT_AT + ITEM] = left
    window = canvas[:, RIGHT_AT : RIGHT_AT + ITEM, RIGHT_AT : RIGHT_AT + ITEM]
    canvas[:, RIGHT_AT : RIGHT_AT + ITEM, RIGHT_AT : RIGHT_AT + ITEM] = torch.maximum(window, right)
    return canvas


def make_split(
    images: torch.Tensor, labels: torch.Tensor, size: int, seed: int, split: str, pairs: int = 1
) -> InMemoryDataset:
    """One MultiMNIST split from base items: each item is the left item of ``pairs`` samples
    (the first ``len(labels)`` samples are the ``pairs=1`` split of the same seed)."""
    if len(labels) < 2:
        raise DataError(
            [
                Problem(
                    f"data (multi_mnist {split} split)",
                    "too few base items to pair",
                    len(labels),
                    "at least 2",
                    "use more base items (train_size / test_size) or change val_fraction",
                )
            ]
        )
    gen = torch.Generator().manual_seed(seed)
    partners = torch.cat([pair_partners(len(labels), gen) for _ in range(pairs)])
    lefts = torch.arange(len(labels)).repeat(pairs)
    canvas = overlay(images[lefts], images[partners])[:, None]
    if size != CANVAS:
        canvas = F.resize(canvas, [size, size], interpolation=InterpolationMode.NEAREST)
    return InMemoryDataset(
        {"image": canvas.float().div_(255.0)},
        {"left": labels[lefts], "right": labels[partners]},
    )


@SOURCES.register("multi_mnist")
class MultiMnistSource(DataSource):
    """MultiMNIST (base MNIST) or MultiFashion (base FashionMNIST), built in memory at load()."""

    def __init__(
        self,
        *,
        base: Base = "MNIST",  # MultiMNIST or MultiFashion
        root: Root = "data/",
        download: bool = False,
        train_size: PosInt | None = None,
        test_size: PosInt | None = None,
        val_fraction: Fraction = 0.1,
        seed: Seed = 0,
        image_size: PosInt = 28,
        pairs_per_item: PosInt = 1,
    ):
        self.base = base
        self.root = resolve(root)
        self.download = download
        self.train_size = train_size
        self.test_size = test_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.size = image_size
        self.pairs = pairs_per_item

    def describe(self) -> DataSpec:
        if not self.download:  # missing files are found at validation, before the run starts
            require_files(self.base, self.root)
        names = list(SETS[self.base].classes)
        targets = {t: TargetSpec(t, "classification", (), len(names), names) for t in ("left", "right")}
        mapping = {c: i for i, c in enumerate(names)}
        return DataSpec(
            inputs={"image": InputSpec("image", (1, self.size, self.size), "image")},
            targets=targets,
            artifacts={"label_maps": {"left": mapping, "right": dict(mapping)}},
        )

    predict_suffixes = IMAGE_SUFFIXES
    predict_accepts = (
        "grayscale image files (PNG, ...) of data.image_size pixels square or 36 x 36 canvases, a "
        "folder of them, or a CSV listing them"
    )

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Image files as the overlaid canvases: grayscale, 8-bit values / 255; a 36 x 36 canvas
        is resized to ``image_size`` with nearest-neighbour interpolation as in training, an
        ``image_size`` image is taken as it is, other sizes only with ``resize`` True (nearest)."""
        s, images, sizes, problems = self.size, [], [], []
        for f in files:
            img = read_image_file(f)
            sizes.append(img.size)
            ok = img.size == (s, s) or (resize is not False and img.size == (CANVAS, CANVAS))
            if not ok and not resize:
                why = (
                    "resize=false"
                    if resize is False
                    else f"MultiMNIST canvases are {CANVAS}x{CANVAS}, resized to data.image_size"
                )
                problems.append(size_problem(f, img.size, (s, s), why))
                continue
            x = image_to_tensor(img, 1)
            if tuple(x.shape[-2:]) != (s, s):
                x = F.resize(x, [s, s], interpolation=InterpolationMode.NEAREST)
            images.append(x.float().div_(255.0))
        if problems:
            raise DataError(problems[:10])
        return PreparedInputs({"image": torch.stack(images)}, [str(f) for f in files], file_stems(files), sizes)

    def load(self) -> dict[str, InMemoryDataset]:
        images, labels = self._base(train=True)
        parts = split_indices(len(labels), self.val_fraction, 0.0, self.seed)
        out = {}
        for k, split in enumerate(("train", "val")):
            idx = parts[split].sort().values  # keep base order inside each part
            seed = self.seed * 1000 + k  # disjoint pairing streams per split
            out[split] = make_split(images[idx], labels[idx], self.size, seed, split, self.pairs)
        images, labels = self._base(train=False)
        out["test"] = make_split(images, labels, self.size, self.seed * 1000 + 2, "test", self.pairs)
        check_nonempty(out, f"data (multi_mnist on {self.base})")
        return out

    def _base(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Base items of one official split, limited to train_size / test_size."""
        images, labels = load_mnist_like(self.base, self.root, self.download, train)
        n = first(len(labels), self.train_size if train else self.test_size)
        return images[:n], labels[:n]
