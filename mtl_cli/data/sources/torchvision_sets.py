"""Classic torchvision datasets as sources: MNIST, FashionMNIST, CIFAR10, CIFAR100, CelebA.

Files are read from ``root`` (relative paths resolve against the current working directory) in
the layout torchvision uses; nothing is downloaded unless ``download: true``. When files are
missing the error names every expected file and how to get it.

Targets:

- MNIST, FashionMNIST, CIFAR10, CIFAR100: ``label`` (classification; class names from the
  dataset). The whole split is decoded into memory (uint8 -> float32 in [0, 1]).
- CelebA: the 40 attributes as 40 binary targets named after the attribute in lower case
  (``smiling``, ``male``, ...). Images are decoded lazily, per sample: the 178 x 178 centre of
  each 178 x 218 aligned face is cut out and resized to ``image_size``.

Splits: MNIST-like and CIFAR sets have an official train/test split; ``val`` is carved from
train by the seeded ``val_fraction``. CelebA has official train/valid/test splits, which are used
as given (``val_fraction`` is ignored). ``limit`` keeps only the first N training samples (before
carving ``val``); ``test_limit`` the first N test samples (and, for CelebA, of ``valid`` too).

``describe()`` never touches the files: it answers from the static facts below.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.error import URLError

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from ...config.params import PosInt, Seed, Text
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

MNIST_CLASSES = (
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
)
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
CELEBA_ATTRS = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class SetInfo:
    """Static facts about one torchvision dataset: enough for ``describe()`` and error messages."""

    folder: str  # torchvision's folder under root
    files: tuple[str, ...]  # files (or folders) torchvision needs inside ``folder``
    channels: int
    native_size: int  # side of the (square) images as stored or as cropped
    default_size: int  # image side used when ``image_size`` is null
    classes: tuple[str, ...] = ()  # class names of the "label" target (not CelebA)


SETS: dict[str, SetInfo] = {
    "MNIST": SetInfo("MNIST/raw", _MNIST_FILES, 1, 28, 28, MNIST_CLASSES),
    "FashionMNIST": SetInfo("FashionMNIST/raw", _MNIST_FILES, 1, 28, 28, FASHION_CLASSES),
    "CIFAR10": SetInfo(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        3,
        32,
        32,
        CIFAR10_CLASSES,
    ),
    "CIFAR100": SetInfo("cifar-100-python", ("train", "test", "meta"), 3, 32, 32, CIFAR100_CLASSES),
    "CelebA": SetInfo(
        "celeba",
        (
            "img_align_celeba",
            "list_attr_celeba.txt",
            "identity_CelebA.txt",
            "list_bbox_celeba.txt",
            "list_landmarks_align_celeba.txt",
            "list_eval_partition.txt",
        ),
        3,
        178,
        64,
    ),
}


#: the folder holding torchvision's file layout
Root = Annotated[str, Text("a folder, relative to the current directory or absolute")]


#: the torchvision datasets this source reads (the names of SETS)
DatasetName = Literal["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "CelebA"]
if set(typing.get_args(DatasetName)) != set(SETS):  # one list, spelled twice for the type checker
    raise RuntimeError("torchvision_sets: DatasetName must list exactly the names of SETS")


def resolve(path: str) -> Path:
    """A config path made absolute against the current working directory."""
    return Path(path).expanduser().resolve()


def _fix_for(dataset: str, folder: Path) -> str:
    """How to obtain the files of ``dataset`` so that they end up in ``folder``."""
    fix = (
        f"set data.download=true on a machine with internet access, or copy the files from "
        f"such a machine into {folder}/"
    )
    if dataset == "FashionMNIST":
        fix += (
            "; on Debian/Ubuntu without internet: `apt-get install dataset-fashion-mnist`, then "
            f"gunzip the four *-ubyte.gz files listed by `dpkg -L dataset-fashion-mnist` into "
            f"{folder}/"
        )
    if dataset == "CelebA":
        fix += " (unzip img_align_celeba.zip there so that img_align_celeba/ holds the .jpg files)"
    return fix


def _mnist_legacy_ok(dataset: str, root: Path) -> bool:
    """torchvision still accepts the old processed/training.pt + test.pt MNIST layout."""
    processed = root / dataset / "processed"
    return (processed / "training.pt").is_file() and (processed / "test.pt").is_file()


def missing_files(dataset: str, root: Path) -> list[Path]:
    """Expected files of ``dataset`` under ``root`` that do not exist (empty when complete)."""
    info = SETS[dataset]
    if info.files == _MNIST_FILES and _mnist_legacy_ok(dataset, root):
        return []
    folder = root / info.folder
    return [folder / f for f in info.files if not (folder / f).exists()]


def require_files(dataset: str, root: Path) -> None:
    """Raise a DataError naming every missing file of ``dataset`` and how to get them."""
    missing = missing_files(dataset, root)
    if not missing:
        return
    folder = root / SETS[dataset].folder
    raise DataError(
        [
            Problem(
                key=str(folder),
                message=f"{dataset} files not found: torchvision expects " + ", ".join(str(p) for p in missing),
                allowed=f"the {dataset} files in torchvision's layout under data.root={root}",
                fix=_fix_for(dataset, folder),
            )
        ]
    )


def open_dataset(dataset: str, root: Path, download: bool, **kwargs):
    """The torchvision dataset object; file problems become a DataError naming the folder."""
    import torchvision.datasets as tvd

    if not download:
        require_files(dataset, root)
    folder = root / SETS[dataset].folder
    try:
        return getattr(tvd, dataset)(str(root), download=download, **kwargs)
    except (RuntimeError, OSError, URLError, ValueError, TypeError, AssertionError) as e:
        action = "download or read" if download else "read"
        raise DataError(
            [
                Problem(
                    key=str(folder),
                    message=f"torchvision could not {action} {dataset}: {e}",
                    allowed=f"complete, uncorrupted {dataset} files in torchvision's layout",
                    fix="delete the folder and download again. " + _fix_for(dataset, folder),
                )
            ]
        ) from e


def labels_file(dataset: str, root: Path, train: bool) -> Path:
    """The file (or, for CIFAR10's five batches, the folder) holding one split's labels."""
    folder = root / SETS[dataset].folder
    if SETS[dataset].files == _MNIST_FILES:
        if _mnist_legacy_ok(dataset, root):  # torchvision prefers the old layout when present
            return root / dataset / "processed" / ("training.pt" if train else "test.pt")
        return folder / ("train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte")
    if dataset == "CIFAR100":
        return folder / ("train" if train else "test")
    if dataset == "CIFAR10" and not train:
        return folder / "test_batch"
    return folder


def check_labels(dataset: str, root: Path, labels: torch.Tensor, train: bool) -> None:
    """DataError naming the file when a label is not a class index 0..K-1 of ``dataset``."""
    k = len(SETS[dataset].classes)
    bad = (labels < 0) | (labels >= k)
    if not bad.any():
        return
    first_bad = int(bad.nonzero()[0]) + 1
    split = "train" if train else "test"
    raise DataError(
        [
            Problem(
                key=str(labels_file(dataset, root, train)),
                message=f"{int(bad.sum())} {split} label(s) outside the {k} classes of {dataset} "
                f"(first: sample {first_bad})",
                value=sorted({int(v) for v in labels[bad].tolist()})[:10],
                allowed=f"class indices 0..{k - 1}",
                fix="the file is not the original: delete the folder and download again. "
                + _fix_for(dataset, root / SETS[dataset].folder),
            )
        ]
    )


def load_mnist_like(dataset: str, root: Path, download: bool, train: bool):
    """(uint8 images [N, 28, 28], int64 labels [N]) of MNIST or FashionMNIST."""
    ds = open_dataset(dataset, root, download, train=train)
    labels = ds.targets.long()
    check_labels(dataset, root, labels, train)
    return ds.data, labels


def to_float_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 in [0, 1], resized (antialiased) to size x size if needed."""
    if images.shape[-2:] != (size, size):
        images = F.resize(images, [size, size], antialias=True)
    return images.float().div_(255.0)


def first(n: int, limit: int | None) -> int:
    """How many samples to keep of ``n`` under an optional ``limit``."""
    return n if limit is None else min(n, limit)


class CelebADataset(Dataset):
    """Lazy CelebA: decodes one image per ``__getitem__`` and yields the sample dict."""

    def __init__(self, base, indices: list[int], size: int):
        self.base = base
        self.indices = indices
        self.size = size
        self.names = [a.lower() for a in CELEBA_ATTRS]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        img, attr = self.base[self.indices[i]]
        x = F.pil_to_tensor(img.convert("RGB"))
        x = F.center_crop(x, [SETS["CelebA"].native_size] * 2)
        x = F.resize(x, [self.size, self.size], antialias=True).float().div_(255.0)
        return {
            "inputs": {"image": x},
            "targets": {n: attr[j].float() for j, n in enumerate(self.names)},
            "masks": {n: torch.tensor(True) for n in self.names},
        }


@SOURCES.register("torchvision")
class TorchvisionSource(DataSource):
    """MNIST / FashionMNIST / CIFAR10 / CIFAR100 / CelebA from torchvision's file layout."""

    def __init__(
        self,
        *,
        dataset: DatasetName = "MNIST",
        root: Root = "data/",
        download: bool = False,
        image_size: PosInt | None = None,
        val_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
        limit: PosInt | None = None,
        test_limit: PosInt | None = None,
    ):
        self.info = SETS[dataset]
        self.dataset = dataset
        self.root = resolve(root)
        self.download = download
        self.size = image_size or self.info.default_size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.limit = limit
        self.test_limit = test_limit

    def describe(self) -> DataSpec:
        if not self.download:  # missing files are found at validation, before the run starts
            require_files(self.dataset, self.root)
        s = self.size
        inputs = {"image": InputSpec("image", (self.info.channels, s, s), "image")}
        if self.dataset == "CelebA":
            targets = {a.lower(): TargetSpec(a.lower(), "binary", ()) for a in CELEBA_ATTRS}
            return DataSpec(inputs, targets)
        names = list(self.info.classes)
        targets = {"label": TargetSpec("label", "classification", (), len(names), names)}
        artifacts = {"label_maps": {"label": {c: i for i, c in enumerate(names)}}}
        return DataSpec(inputs, targets, artifacts)

    predict_suffixes = IMAGE_SUFFIXES
    predict_accepts = (
        "image files (PNG, JPEG, ...; converted to the dataset's channels and resized to its "
        "image size), a folder of them, or a CSV listing them"
    )

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Image files as the dataset's images: 8-bit values / 255 in the dataset's channels;
        CelebA's centre square cut out; resized (antialiased) to ``image_size``. ``resize``
        False: refuse images that are not ``image_size`` square instead of cropping or resizing."""
        s, c = self.size, self.info.channels
        images, sizes, problems = [], [], []
        for f in files:
            img = read_image_file(f)
            sizes.append(img.size)
            if resize is False and img.size != (s, s):
                problems.append(size_problem(f, img.size, (s, s), "resize=false"))
                continue
            x = image_to_tensor(img, c)
            if self.dataset == "CelebA":  # as CelebADataset: the centre square of the aligned face
                side = min(x.shape[-2:])
                x = F.center_crop(x, [side, side])
            images.append(to_float_images(x[None], s)[0])
        if problems:
            raise DataError(problems[:10])
        return PreparedInputs({"image": torch.stack(images)}, [str(f) for f in files], file_stems(files), sizes)

    def load(self) -> dict[str, Dataset]:
        splits = self._load_celeba() if self.dataset == "CelebA" else self._load_in_memory()
        check_nonempty(
            splits,
            f"data (torchvision {self.dataset})",
            "raise data.limit / data.test_limit (null = all samples) or data.val_fraction",
        )
        return splits

    def _arrays(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [N, C, H, W] and int64 labels [N] of one official split, limited."""
        ds = open_dataset(self.dataset, self.root, self.download, train=train)
        n = first(len(ds.targets), self.limit if train else self.test_limit)
        data = torch.as_tensor(ds.data[:n])
        images = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # CIFAR is NHWC
        labels = torch.as_tensor(ds.targets[:n], dtype=torch.long)
        check_labels(self.dataset, self.root, labels, train)
        return images, labels

    def _load_in_memory(self) -> dict[str, Dataset]:
        out = {}
        for split, train in (("train", True), ("test", False)):
            images, labels = self._arrays(train)
            out[split] = InMemoryDataset({"image": to_float_images(images, self.size)}, {"label": labels})
        idx = split_indices(len(out["train"]), self.val_fraction, 0.0, self.split_seed)
        full = out["train"]
        out["train"], out["val"] = full.subset(idx["train"]), full.subset(idx["val"])
        return {s: out[s] for s in ("train", "val", "test")}

    def _load_celeba(self) -> dict[str, Dataset]:
        out = {}
        for split, official in (("train", "train"), ("val", "valid"), ("test", "test")):
            base = open_dataset("CelebA", self.root, self.download, split=official, target_type="attr")
            self._check_celeba_header(base)
            n = first(len(base), self.limit if split == "train" else self.test_limit)
            out[split] = CelebADataset(base, list(range(n)), self.size)
        return out

    def _check_celeba_header(self, base) -> None:
        names = [a for a in base.attr_names if a]
        if names != list(CELEBA_ATTRS):
            path = self.root / "celeba" / "list_attr_celeba.txt"
            raise DataError(
                [
                    Problem(
                        str(path),
                        "unexpected attribute header",
                        " ".join(names),
                        " ".join(CELEBA_ATTRS),
                        "use the original list_attr_celeba.txt",
                    )
                ]
            )
