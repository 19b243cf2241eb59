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

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

import torch
from torch.utils.data import Dataset

from ..config.params import Range
from ..errors import DataError, Problem

log = logging.getLogger("mtl_cli")

SPLITS = ("train", "val", "test")

#: the dataset name of the `data` node; the others are named under `datasets`
PRIMARY = "data"


def qualify(dataset: str, key: str) -> str:
    """The model-wide name of input or target ``key`` of ``dataset``: unchanged for the primary
    dataset, ``<dataset>/<key>`` for the others (two datasets may both have an ``image``)."""
    return key if dataset == PRIMARY else f"{dataset}/{key}"


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
    #: regression targets the source standardised: ``{"mean": m, "std": s}``, the model learns
    #: ``(value - m) / s``; predictions and metrics are turned back into the target's units
    scaling: dict[str, float] | None = None


@dataclass
class DataSpec:
    inputs: dict[str, InputSpec]
    targets: dict[str, TargetSpec]
    artifacts: dict[str, Any] = field(default_factory=dict)  # e.g. label maps, saved in the run dir


@dataclass
class PreparedInputs:
    """Model inputs for prediction (``mtl-predict``), prepared the way a source prepares its
    training samples.

    ``inputs``: input key -> tensor [N, ...]; ``names``: where each sample came from (a file, or
    ``file:row N``); ``stems``: a file-name-safe stem per sample, for per-sample outputs such as
    masks; ``sizes``: the original (width, height) of each image before resizing, or None."""

    inputs: dict[str, torch.Tensor]
    names: list[str]
    stems: list[str]
    sizes: list[tuple[int, int] | None] | None = None

    def __len__(self) -> int:
        return len(self.names)


def available_memory_bytes() -> int | None:
    """The memory available to a new allocation (Linux ``MemAvailable``; else free physical
    pages); None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class DataSource:
    """Base class of data sources. Subclasses take their config keys as typed __init__ args.

    Optional, for ``mtl-predict``: ``predict_suffixes`` (the file suffixes ``prepare_inputs``
    reads; empty: the source cannot prepare inputs), ``predict_accepts`` (those inputs in words)
    and ``prepare_inputs``.
    """

    predict_suffixes: tuple[str, ...] = ()
    predict_accepts: str = ""

    def describe(self) -> DataSpec:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self) -> dict[str, Dataset]:  # pragma: no cover - interface
        raise NotImplementedError

    def use_recorded(self, artifacts: dict) -> None:
        """What a finished run recorded of this source (its data.json, ``artifacts``) and the source
        must reproduce as the run had it rather than compute again (mtl-eval, mtl-predict): e.g. the
        scaling its regression targets were trained with. Nothing by default."""

    def estimated_bytes(self) -> int | None:
        """About how much memory ``load()`` needs at its peak, for sources that generate or decode
        everything into memory; None when unknown. Validation compares it with the memory the
        machine has, so a size that cannot fit is refused before anything is allocated."""
        return None

    def prediction_files(self, paths: Sequence[Path]) -> list[Path]:
        """The files to prepare for the user's input paths (see :func:`prediction_files`)."""
        return prediction_files(self, paths)

    def prepare_inputs(self, files: list[Path], artifacts: dict, resize: bool | None = None) -> PreparedInputs:
        """The model inputs of ``files`` (each with a suffix in ``predict_suffixes``), prepared
        exactly as ``load()`` prepares training samples: same resizing, channels and
        normalisation. ``artifacts``: what the run recorded (its data.json; statistics found
        there win over recomputed ones). ``resize`` (image sources): None = the source's own
        rule, True = resize images of any size, False = refuse images of another size."""
        raise cannot_predict(self)


def cannot_predict(source: DataSource) -> DataError:
    """The error for a source without ``prepare_inputs``: names it and the sources that have one."""
    from ..registry import SOURCES

    able = [n for n in SOURCES.names() if SOURCES.get(n).predict_suffixes]
    name = next((n for n in SOURCES.names() if isinstance(source, SOURCES.get(n))), type(source).__name__)
    return DataError(
        [
            Problem(
                "input",
                f"the {name} data source cannot prepare inputs for prediction",
                name,
                allowed="runs on the data sources "
                + ", ".join(able)
                + " ("
                + "; ".join(f"{n}: {SOURCES.get(n).predict_accepts}" for n in able)
                + ")",
                fix="predict with a run trained on one of those sources, or evaluate this run "
                "on other data with mtl-eval and data overrides",
            )
        ]
    )


# --- helpers of prepare_inputs -----------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def prediction_files(source: DataSource, paths: Sequence[Path], list_column: str | None = None) -> list[Path]:
    """The files ``source.prepare_inputs`` reads for the user's ``paths``: a folder gives its files
    with one of ``source.predict_suffixes`` (sorted by name, not recursive); for a source of files
    that are not tables, a CSV/TSV file is a list of such files (column ``list_column``, else
    ``image``, ``path`` or the first column; relative paths against the list's folder)."""
    if not source.predict_suffixes:
        raise cannot_predict(source)
    suffixes = tuple(s.lower() for s in source.predict_suffixes)
    reads_tables = any(s in TABLE_SUFFIXES for s in suffixes)
    out: list[Path] = []
    problems: list[Problem] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                problems.append(
                    Problem(
                        "input",
                        f"folder {p} holds no {'/'.join(suffixes)} files",
                        str(p),
                        allowed=source.predict_accepts,
                        fix="point input= at a folder of such files",
                    )
                )
            out += found
        elif not p.is_file():
            problems.append(
                Problem(
                    "input",
                    f"no such file or folder: {p}",
                    str(p),
                    fix=f"check the path (relative paths resolve against {Path.cwd()})",
                )
            )
        elif p.suffix.lower() in suffixes:
            out.append(p)
        elif p.suffix.lower() in TABLE_SUFFIXES and not reads_tables:
            try:
                out += _listed_files(p, list_column, suffixes)
            except DataError as e:
                problems += e.problems
        else:
            problems.append(
                Problem(
                    "input",
                    f"{p} is not a file this run's data source reads",
                    str(p),
                    allowed=source.predict_accepts,
                    fix="give files of the allowed kinds",
                )
            )
    if problems:
        raise DataError(problems)
    if not out:
        raise DataError(
            [
                Problem(
                    "input",
                    "no input files given",
                    allowed=source.predict_accepts,
                    fix="set input=<file, folder or list>",
                )
            ]
        )
    return out


def _listed_files(table: Path, column: str | None, suffixes: tuple[str, ...]) -> list[Path]:
    """The files named in one column of a CSV/TSV list (relative to the list's folder)."""
    import csv

    delimiter = "\t" if table.suffix.lower() in (".tsv", ".tab") else ","
    with open(table, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError([Problem(str(table), "the list of input files is empty", fix="add a header and file paths")])
    header = [h.strip() for h in rows[0]]
    name = column if column in header else next((c for c in ("image", "path") if c in header), header[0])
    j = header.index(name)
    files: list[Path] = []
    problems: list[Problem] = []
    for i, row in enumerate(rows[1:], start=1):
        cell = row[j].strip() if j < len(row) else ""
        if not cell:
            continue
        found = (table.parent / cell).resolve()
        if not found.is_file() and "\\" in cell:  # Windows separators: img\0001.png
            found = (table.parent / cell.replace("\\", "/")).resolve()
        if not found.is_file():
            problems.append(
                Problem(
                    str(table),
                    f"row {i}, column {name!r}: no such file {found}",
                    cell,
                    fix="correct the path (relative paths resolve against the list's folder)",
                )
            )
        elif found.suffix.lower() not in suffixes:
            problems.append(
                Problem(
                    str(table),
                    f"row {i}, column {name!r}: not a {'/'.join(suffixes)} file",
                    cell,
                    fix="list image files only",
                )
            )
        else:
            files.append(found)
    if problems:
        raise DataError(problems[:10])
    return files


def file_stems(files: Sequence[Path]) -> list[str]:
    """One stem per file, made unique with ``-2``, ``-3``... where two files share a name."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = f.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


#: PIL modes with more than 8 bits per pixel, single-channel, and the number their pixel values are
#: divided by to land in [0, 1]: 16-bit grayscale (PNG, TIFF) by 65535; 32-bit integer ("I", which
#: older Pillow gives for 16-bit PNGs too) read as 16-bit, other values refused; 32-bit float ("F")
#: taken as it is, values outside [0, 1] refused (their scale cannot be known)
WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def read_image_file(path: Path, where: str = "", fix: str = "replace the file or leave it out"):
    """The fully decoded PIL image of an input file; DataError naming it (and ``where``, e.g. a
    manifest row) when unreadable. An image larger than PIL's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is logged as one warning naming the file, not printed raw by
    the warnings module; one over twice the limit is refused."""
    import warnings

    from PIL import Image

    at = f" ({where})" if where else ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
    except Image.DecompressionBombError as e:
        raise DataError(
            [
                Problem(
                    str(path),
                    f"image too large to decode safely{at}: {e}",
                    allowed=f"images up to {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (twice PIL's MAX_IMAGE_PIXELS)",
                    fix="downscale the image before training (it is resized to data.image_size anyway)",
                )
            ]
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(
            [
                Problem(
                    str(path),
                    f"cannot decode image{at}: {e}",
                    allowed="a complete PNG/JPEG/... image",
                    fix=fix,
                )
            ]
        ) from e
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            w_, h_ = img.size
            log.warning(
                "%s%s: a very large image (%dx%d = %s pixels, over PIL's decompression-bomb limit of %s): "
                "decoded anyway; downscale it to save time and memory",
                path,
                at,
                w_,
                h_,
                f"{w_ * h_:,}",
                f"{Image.MAX_IMAGE_PIXELS or 0:,}",
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return img


def image_pixels(img, channels: int, path: Path | str = "", where: str = "") -> torch.Tensor:
    """The pixels of a PIL image with ``channels`` channels (1: grayscale, 3: RGB), [C, H, W]:
    uint8 for 8-bit images (PIL's conversion: palette, bilevel, alpha dropped, CMYK, ...), float32
    in [0, 1] for the wide modes of :data:`WIDE_MODES` (16-bit grayscale scaled by 1/65535, never
    clipped to 0/255 as PIL's own conversion to 8 bits does). DataError naming ``path`` for pixel
    values whose scale cannot be known (32-bit integers above 65535, floats outside [0, 1])."""
    import numpy as np

    if img.mode in WIDE_MODES:
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        top = 65535.0 if img.mode != "F" else 1.0
        if not (np.isfinite(arr).all() and lo >= 0 and hi <= top):
            at = f" ({where})" if where else ""
            raise DataError(
                [
                    Problem(
                        str(path),
                        f"{img.mode} image with pixel values from {lo:g} to {hi:g}{at}: their scale cannot be known",
                        f"{lo:g}..{hi:g}",
                        allowed="16-bit images (0..65535) and float images in [0, 1]; any 8-bit image",
                        fix="save the image as 8- or 16-bit PNG (or scale a float image to [0, 1])",
                    )
                ]
            )
        x = torch.from_numpy((arr / WIDE_MODES[img.mode]).astype(np.float32))[None]
        return x.expand(channels, -1, -1).contiguous()
    target = "L" if channels == 1 else "RGB"
    try:
        img = img.convert(target)
    except ValueError:  # e.g. LAB has no direct conversion to L: through RGB
        img = img.convert("RGB").convert(target)
    x = torch.from_numpy(np.array(img))
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def image_to_tensor(img, channels: int) -> torch.Tensor:
    """uint8 [C, H, W] of a PIL image with 1 (grayscale) or 3 (RGB) channels: 8-bit images by PIL's
    conversion, wider ones (16-bit, float) scaled to 0..255 and rounded (see :func:`image_pixels`)."""
    x = image_pixels(img, channels, getattr(img, "filename", "") or "")
    return x if x.dtype == torch.uint8 else x.mul(255.0).round_().to(torch.uint8)


def size_problem(path: Path, got: tuple[int, int], want: tuple[int, int], why: str) -> Problem:
    """An input image of another size than the run's images, under a policy that refuses it."""
    return Problem(
        str(path),
        f"image is {got[0]}x{got[1]} pixels, the run's images are {want[0]}x{want[1]} ({why})",
        f"{got[0]}x{got[1]}",
        allowed=f"{want[0]}x{want[1]} images",
        fix=f"resize the image to {want[0]}x{want[1]}, or pass resize=true to have it resized "
        "(antialiased), which may lower the quality of the predictions",
    )


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


#: the fraction of a split's samples set aside for another split (val, test): the rest must stay
Fraction = Annotated[float, Range(ge=0, lt=1)]


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, torch.Tensor]:
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
    check_split_sizes({s: len(ds) for s, ds in splits.items()}, where, fix)


def check_split_sizes(sizes: dict[str, int], where: str, fix: str | None = None) -> None:
    """DataError naming every split of ``sizes`` (split -> samples) without samples. The default
    fix: lower the val/test fractions when the train split is empty (they took every row), raise
    them when a val or test split is."""
    empty = [s for s, n in sizes.items() if n == 0]
    if not empty:
        return
    if fix is None:
        fix = (
            "use more data, or lower data.val_fraction / data.test_fraction: the rows they carve leave none to train on"
            if "train" in empty
            else "use more data, or raise data.val_fraction / data.test_fraction so that every split "
            "gets at least one sample"
        )
    raise DataError(
        [
            Problem(
                key=where,
                message=f"split(s) {', '.join(empty)} have no samples (samples per split: "
                + ", ".join(f"{s} {n}" for s, n in sizes.items())
                + ")",
                fix=fix,
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
        return InMemoryDataset(
            *(
                _rename({"inputs": ds.inputs, "targets": ds.targets, "masks": ds.masks}, prefix)[part]
                for part in ("inputs", "targets", "masks")
            )
        )
    return _Prefixed(ds, prefix)


# --- helpers of the generated sources (shapes, tones) ----------------------------------------------
def missing_label_problems(missing: dict[str, float], targets: Sequence[str], source: str) -> list[Problem]:
    """``data.missing_labels`` entries naming an unknown target (each fraction's domain, [0, 1],
    is declared in the source's annotation)."""
    return [
        Problem(
            f"data.missing_labels.{target}",
            f"not a target of the {source} source",
            target,
            ", ".join(targets),
            "name one of the allowed targets",
        )
        for target in missing
        if target not in targets
    ]


def missing_label_masks(n: int, missing: dict[str, float], seed: int) -> dict[str, torch.Tensor]:
    """Seeded masks [n] that drop the given fraction of each target's labels (False = missing)."""
    g = torch.Generator().manual_seed(seed)
    return {target: torch.rand(n, generator=g) >= frac for target, frac in missing.items()}
