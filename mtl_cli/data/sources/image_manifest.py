"""Images listed in a CSV manifest, one row per sample, with one column per task label.

The manifest (``path``) has an image column (``image_column``) holding image paths, relative to
the manifest's folder or absolute, and label columns. ``targets`` maps target names to columns
(default: every other column, named as the column, except ``split_column``). A target's kind is
``kinds[name]`` when given, else inferred from its values:

- every value a path to an image file (.png, .jpg, ...) -> ``segmentation``: single-channel
  (grayscale or palette) mask images whose pixel values are class indices; ``ignore_index``
  (default 255) marks pixels to ignore. Declare ``kinds: {t: dense_regression}`` for maps of
  numbers instead: 8-bit grayscale is scaled by 1/255, 16-bit by 1/65535 (float images kept as
  they are); pixels equal to ``dense_missing_value`` become NaN (missing);
- any other non-numeric value -> ``classification``: class names, mapped to 0..K-1 in the order
  of ``classes[t]`` when given (a label outside it is an error), else the train split's labels
  sorted (a label only val or test rows have is refused, and so is a single class);
- numbers -> ``regression`` (declare ``binary`` or ``classification`` when meant);
- numbers with a few cells that are not (a stray text, ``inf`` or ``3,5``), or image paths with a
  few cells that are not -> refused, naming those cells: declare the kind.

An empty cell is a missing label (mask False); a target without a label in the train split is
refused. Binary targets need both values in the train split (or ``classes[t]`` declaring the
two). Images are converted to RGB (``channels: 3``) or grayscale (``channels: 1``): 8-bit images
by PIL's conversion (palette, bilevel, CMYK...; alpha dropped), 16-bit grayscale scaled by
1/65535 (never clipped to 8 bits), float images kept in [0, 1] (others refused); then resized to
``image_size`` x ``image_size`` (antialiased);
masks and maps must have the size of their image (else an error names both files) and use
nearest-neighbour resizing so that class indices stay intact. Segmentation
without ``classes[t]`` has max(mask value) + 1 classes, found by reading the masks once in
``describe()`` (declare ``classes`` to skip that scan).

``cache: true`` decodes every image at ``load()`` into memory (fast epochs, errors up front);
``cache: false`` decodes lazily per sample (large sets): ``load()`` then only checks that every
file exists, and a file that cannot be decoded stops the run with a DataError naming it and its
manifest row when its batch comes.

Image paths may use Windows separators (``img\\0001.png``): a backslash path that is not a
file is read with ``/`` instead; a Windows absolute path (``C:\\...``) is refused once, with a hint.

Splits: when the manifest has the column ``split_column`` its values (train, val, test) assign
rows; splits it does not provide, or all when the column is absent, are carved from the train
rows by the seeded ``val_fraction`` / ``test_fraction``. Which rows form each split is recorded in
``artifacts["split"]`` (data.json).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ...config.params import NonNegInt, PosInt, Seed, Text
from ...errors import DataError, Problem
from ...registry import SOURCES
from ..base import (
    DataSource,
    DataSpec,
    Fraction,
    InMemoryDataset,
    InputSpec,
    PreparedInputs,
    TargetSpec,
    check_nonempty,
    check_split_sizes,
    file_stems,
    image_pixels,
    prediction_files,
    read_image_file,
    size_problem,
    split_indices,
)
from ..tabular import (
    Problems,
    SplitRows,
    Table,
    check_binary,
    check_labelled,
    class_map,
    encode_scalar,
    infer_kind,
    is_missing,
    missing_column,
    split_record,
)
from .csv import ClassList, Column, Delimiter, class_names, fraction_problems, read_table, resolve, scale_of

Kind = Literal["classification", "binary", "regression", "segmentation", "dense_regression"]
SCALAR_KINDS = get_args(Kind)[:3]
DENSE_KINDS = get_args(Kind)[3:]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
DENSE_SCALE = {
    "L": 255.0,
    "P": 255.0,
    "I;16": 65535.0,
    "I;16B": 65535.0,
    "I;16L": 65535.0,
    "I": 65535.0,
    "F": 1.0,
    "1": 1.0,
}
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def open_image(path: Path, where: str) -> Image.Image:
    """Fully decoded PIL image; DataError naming the file and manifest row when unreadable."""
    if not path.is_file():
        raise DataError(
            [
                Problem(
                    str(path),
                    f"image file not found ({where})",
                    fix="correct the path in the manifest (relative paths resolve against the manifest's folder)",
                )
            ]
        )
    return read_image_file(path, where, "replace the file or remove its row from the manifest")


def mask_array(path: Path, where: str) -> tuple[np.ndarray, str]:
    """Raw pixel values of a single-channel mask/map image, and its PIL mode."""
    img = open_image(path, where)
    if img.mode not in DENSE_SCALE:
        raise DataError(
            [
                Problem(
                    str(path),
                    f"mask/map image is not single-channel ({where})",
                    img.mode,
                    "grayscale (L, I;16, I, F) or palette (P) images",
                    "save the mask as a grayscale or palette PNG",
                )
            ]
        )
    return np.array(img), img.mode


def stack(samples: list[dict], part: str) -> dict[str, torch.Tensor]:
    """Stack one part ("inputs", "targets" or "masks") of sample dicts along a new dim 0."""
    return {k: torch.stack([s[part][k] for s in samples]) for k in samples[0][part]}


def resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """[..., H, W] -> [..., size, size] with nearest-neighbour interpolation."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.resize(x, [size, size], interpolation=InterpolationMode.NEAREST)


@SOURCES.register("image_manifest")
class ImageManifestSource(DataSource):
    """Images plus per-task labels (classes, numbers, mask images) from a CSV manifest."""

    def __init__(
        self,
        *,
        path: Annotated[str, Text("the manifest file: CSV, TSV or Parquet")] | None = None,
        image_column: Column = "image",
        targets: dict[str, Column] | None = None,
        kinds: dict[str, Kind] | None = None,
        classes: dict[str, ClassList] | None = None,
        split_column: Column = "split",
        val_fraction: Fraction = 0.1,
        test_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
        image_size: PosInt = 64,
        channels: Literal[1, 3] = 3,  # grayscale or RGB
        cache: bool = True,
        ignore_index: NonNegInt = 255,  # a mask pixel value
        dense_missing_value: NonNegInt | None = None,  # a raw pixel value
        delimiter: Delimiter | None = None,
        standardize_targets: bool = True,
    ):
        self.path = path
        self.standardize_targets = standardize_targets
        self._recorded_scaling: dict | None = None  # a finished run's target scaling (use_recorded)
        self.image_column = image_column
        self.target_columns = dict(targets) if targets else None
        self.kinds = dict(kinds or {})
        self.classes = class_names(classes)
        self.split_column = split_column
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self.size = image_size
        self.channels = channels
        self.cache = cache
        self.ignore_index = ignore_index
        self.dense_missing_value = dense_missing_value
        self.delimiter = delimiter
        self._check_config()
        self._table: Table | None = None
        self._spec: DataSpec | None = None
        self._scalars: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._raw: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _check_config(self) -> None:
        problems = []
        if not self.path:
            problems.append(Problem("data.path", "no manifest CSV given", fix="set data.path=manifest.csv"))
        if problems:
            raise DataError(problems)

    # ---- describe -------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return resolve(self.path).parent

    def table(self) -> Table:
        """The manifest, read once; image, target and declared columns checked."""
        if self._table is None:
            table = read_table(resolve(self.path), self.delimiter)
            problems = Problems()
            for column, key in [(self.image_column, "data.image_column")] + [
                (c, "data.targets") for c in (self.target_columns or {}).values()
            ]:
                if column not in table.header:
                    problems.add(missing_column(table, column, key))
            problems.raise_if_any()
            self._table = table
        return self._table

    def columns(self) -> dict[str, str]:
        """target name -> column; default every column but the image and split columns."""
        if self.target_columns is not None:
            return self.target_columns
        skip = {self.image_column, self.split_column}
        return {c: c for c in self.table().header if c not in skip}

    def file_of(self, cell: str) -> Path:
        """The file a manifest cell names: relative to the manifest's folder, or absolute; a path
        with Windows separators (``img\\0001.png``) that is not a file is read with ``/``."""
        text = cell.strip()
        path = self.folder / text
        if "\\" in text and not path.is_file() and not _WINDOWS_ABSOLUTE.match(text):
            return self.folder / text.replace("\\", "/")
        return path

    def rows(self) -> SplitRows:
        """The manifest's rows of each split (see :meth:`split_rows`)."""
        table = self.table()
        return {s: [(table, idx.tolist())] for s, idx in self.split_rows().items()}

    def kind(self, name: str) -> str:
        if name in self.kinds:
            return self.kinds[name]
        column = self.columns()[name]
        table = self.table()
        values = [(i, v) for i, v in enumerate(table.column(column, "data.targets")) if not is_missing(v)]
        paths = [v for _, v in values if v.strip().lower().endswith(IMAGE_SUFFIXES)]
        if values and len(paths) == len(values):
            return "segmentation"
        if paths and len(paths) >= len(values) / 2:
            problems = Problems()
            for i, v in values:
                if not v.strip().lower().endswith(IMAGE_SUFFIXES):
                    problems.add(
                        Problem(
                            str(table.path),
                            f"{table.where(i)}, column {column!r}: not an image path, in a column of mask/map "
                            f"images ({len(paths)} of its {len(values)} labels are image paths)",
                            v,
                            "paths to .png/.jpg/... files, or an empty cell for a missing mask",
                            f"empty the cell (a missing label) or correct it; if the column is not masks, "
                            f"declare data.kinds.{name}",
                        )
                    )
            problems.raise_if_any()
        if name in self.classes:
            return "classification"
        return infer_kind(self.rows(), column, name)

    def describe(self) -> DataSpec:
        if self._spec is None:
            self._check_unknown_names()
            self._check_fractions()
            rows = self.rows()
            sizes = {s: sum(len(i) for _, i in parts) for s, parts in rows.items()}
            if not sizes["train"]:  # the label checks need train rows; empty val/test are refused by load()
                check_split_sizes(sizes, self._data_where(), self._split_fix())
            s, targets, maps = self.size, {}, {}
            for name in self.columns():
                targets[name] = self._target_spec(name, maps)
            inputs = {"image": InputSpec("image", (self.channels, s, s), "image")}
            self._spec = DataSpec(inputs, targets, {"label_maps": maps})
            scaling = self._target_scaling()
            for name, scale in scaling.items():
                self._spec.targets[name].scaling = scale
            if scaling:
                self._spec.artifacts["target_scaling"] = scaling
        return self._spec

    def _target_scaling(self) -> dict[str, dict[str, float]]:
        """Mean and std of each regression target over its labelled train rows (``standardize_targets``;
        the tasks learn ``(y - mean) / std``, metrics and predictions are in the target's units), or
        the scaling a finished run recorded (:meth:`use_recorded`)."""
        if self._recorded_scaling is not None:
            return dict(self._recorded_scaling)
        regression = [n for n, t in (self._spec.targets if self._spec else {}).items() if t.kind == "regression"]
        if not self.standardize_targets or not regression:
            return {}
        raw, train = self._raw_scalars(), self.split_rows()["train"]
        out = {}
        for name in regression:
            values, mask = raw[name]
            out[name] = scale_of(values[train][mask[train]].double().tolist())
        return out

    def use_recorded(self, artifacts: dict) -> None:
        """The run's target scaling as data.json records it (none when it records none: the run
        trained on raw values), whatever ``standardize_targets`` says now."""
        self._recorded_scaling = dict(artifacts.get("target_scaling") or {})
        self._spec, self._scalars = None, None

    def _data_where(self) -> str:
        return f"data (image_manifest {self.table().path})"

    def _split_fix(self) -> str | None:
        if self.split_column not in self.table().header:
            return None
        return (
            f"mark rows of every split in column {self.split_column!r} (train, val, test); a "
            "split without rows there is carved from the train rows by data.val_fraction / "
            "data.test_fraction"
        )

    def _check_unknown_names(self) -> None:
        names = self.columns()
        problems = [
            Problem(
                f"data.{key}.{n}",
                "not a target of this manifest",
                n,
                ", ".join(names),
                "use a target name (see data.targets / the manifest's columns)",
            )
            for key, d in (("kinds", self.kinds), ("classes", self.classes))
            for n in d
            if n not in names
        ]
        if problems:
            raise DataError(problems)

    def _check_fractions(self) -> None:
        """The fractions carved from the train rows (for the splits the manifest does not give)
        must leave train rows."""
        table = self.table()
        given = set()
        if self.split_column in table.header:
            column = table.column(self.split_column, "data.split_column")
            given = {SPLIT_NAMES.get(c.strip().lower()) for c in column}
        problems = fraction_problems(self.fractions, {s: s not in given for s in ("val", "test")})
        if problems:
            raise DataError(problems)

    def _target_spec(self, name: str, maps: dict[str, dict[str, int]]) -> TargetSpec:
        kind, s = self.kind(name), self.size
        column, rows = self.columns()[name], self.rows()
        check_labelled(rows, column, name)
        if kind == "classification":
            maps[name] = class_map(rows, column, name, self.classes.get(name))
            return TargetSpec(name, kind, (), len(maps[name]), list(maps[name]))
        if kind == "binary":
            check_binary(rows, column, name, self.classes.get(name))
        if kind == "segmentation":
            names = self.classes.get(name)
            n = len(names) if names else self._scan_num_classes(name)
            return TargetSpec(name, kind, (s, s), n, names, ignore_index=self.ignore_index)
        if kind == "dense_regression":
            return TargetSpec(name, kind, (1, s, s))
        return TargetSpec(name, kind, ())

    def _scan_num_classes(self, name: str) -> int:
        """Segmentation classes = largest mask value (other than ignore_index) + 1."""
        table, column, top = self.table(), self.columns()[name], 0
        for i, cell in enumerate(table.column(column, "data.targets")):
            if not is_missing(cell):
                arr, _ = mask_array(self.file_of(cell), self._where(i, column))
                values = arr[arr != self.ignore_index]
                top = max(top, int(values.max()) if values.size else 0)
        if top == 0:
            raise DataError(
                [
                    Problem(
                        str(table.path),
                        f"column {column!r} (target {name!r}): every mask holds class 0 only (or ignored "
                        "pixels); segmentation needs at least two classes",
                        0,
                        "masks whose pixel values are class indices 0..K-1, K >= 2",
                        f"check the masks (a mask saved at 0/1 scale shows as black), or declare the classes in "
                        f"data.classes.{name}",
                    )
                ]
            )
        return top + 1

    # ---- decoding -------------------------------------------------------------------------

    def _where(self, i: int, column: str) -> str:
        return f"manifest {self.table().path}, {self.table().where(i)}, column {column!r}"

    def scalar_targets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Values and masks of every scalar target over all rows (bad cells: one DataError), as the
        tasks learn them: regression targets standardised where the spec says so."""
        if self._scalars is None:
            spec, out = self.describe(), dict(self._raw_scalars())
            for name, t in spec.targets.items():
                if t.scaling and name in out:
                    values, mask = out[name]
                    out[name] = (((values.double() - t.scaling["mean"]) / t.scaling["std"]).float(), mask)
            self._scalars = out
        return self._scalars

    def _raw_scalars(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The scalar targets' values as the manifest gives them (classes as indices)."""
        if self._raw is None:
            spec, problems, out = self._spec or self.describe(), Problems(), {}
            for name, t in spec.targets.items():
                if t.kind in SCALAR_KINDS:
                    mapping = spec.artifacts["label_maps"].get(name)
                    out[name] = encode_scalar(self.table(), self.columns()[name], t.kind, mapping, problems)
            problems.raise_if_any()
            self._raw = out
        return self._raw

    def cell(self, i: int, column: str) -> str:
        table = self.table()
        return table.rows[i][table.index(column, "data.targets")]

    def image_path(self, i: int) -> Path:
        return self.file_of(self.cell(i, self.image_column))

    def read_image(self, i: int) -> torch.Tensor:
        """Row ``i``'s image as float32 [C, S, S] in [0, 1]."""
        where = self._where(i, self.image_column)
        return self._image_tensor(open_image(self.image_path(i), where), self.image_path(i), where)

    def _image_tensor(self, img: Image.Image, path: Path | str = "", where: str = "") -> torch.Tensor:
        """float32 [C, S, S] in [0, 1]: 8-bit pixels / 255, 16-bit ones / 65535 (see
        :func:`~mtl_cli.data.base.image_pixels`), resized (antialiased)."""
        x = F.resize(image_pixels(img, self.channels, path, where), [self.size, self.size], antialias=True)
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.clamp_(0.0, 1.0)

    def read_dense(
        self, i: int, name: str, kind: str, image_size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, bool]:
        """Row ``i``'s mask (int64 [S, S]) or map (float32 [1, S, S]), and whether present.

        ``image_size`` (width, height) of the row's image: a mask or map of another size is an
        error (it cannot be aligned with its image)."""
        column = self.columns()[name]
        cell = self.cell(i, column)
        s = self.size
        if is_missing(cell):
            if kind == "segmentation":
                return torch.full((s, s), self.ignore_index, dtype=torch.long), False
            return torch.full((1, s, s), float("nan")), False
        arr, mode = mask_array(self.file_of(cell), self._where(i, column))
        if image_size is not None and (arr.shape[1], arr.shape[0]) != tuple(image_size):
            self._size_mismatch(i, column, cell, (arr.shape[1], arr.shape[0]), image_size)
        if kind == "segmentation":
            self._check_mask_values(arr, name, i, column, cell)
            return resize_nearest(torch.from_numpy(arr.astype(np.int64))[None], s)[0], True
        return resize_nearest(self._dense_values(arr, mode)[None], s), True

    def _dense_values(self, arr: np.ndarray, mode: str) -> torch.Tensor:
        x = torch.from_numpy(arr.astype(np.float32)) / DENSE_SCALE[mode]
        if self.dense_missing_value is not None:
            x[torch.from_numpy(arr == self.dense_missing_value)] = float("nan")
        return x

    def _check_mask_values(self, arr: np.ndarray, name: str, i: int, column: str, cell: str) -> None:
        n = self.describe().targets[name].num_classes or 0
        bad = (arr >= n) & (arr != self.ignore_index)
        if bad.any():
            raise DataError(
                [
                    Problem(
                        str(self.file_of(cell)),
                        f"mask pixel values outside the classes ({self._where(i, column)})",
                        sorted({int(v) for v in np.unique(arr[bad])})[:10],
                        f"0..{n - 1} or ignore_index {self.ignore_index}",
                        f"fix the mask, or extend data.classes.{name}",
                    )
                ]
            )

    def _size_mismatch(self, i: int, column: str, cell: str, got: tuple[int, int], image_size: tuple[int, int]) -> None:
        w, h = image_size
        raise DataError(
            [
                Problem(
                    str(self.file_of(cell)),
                    f"mask/map is {got[0]}x{got[1]} pixels but its image is {w}x{h} ({self._where(i, column)})",
                    allowed=f"{w}x{h} (width x height), the size of {self.image_path(i)}",
                    fix="save the mask/map at its image's size, or correct the manifest row if it names the wrong file",
                )
            ]
        )

    def sample(self, i: int) -> dict:
        """The full sample dict of row ``i``."""
        where = self._where(i, self.image_column)
        img = open_image(self.image_path(i), where)
        targets: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for name, t in self.describe().targets.items():
            if t.kind in DENSE_KINDS:
                targets[name], present = self.read_dense(i, name, t.kind, img.size)
                masks[name] = torch.tensor(present)
            else:
                values, mask = self.scalar_targets()[name]
                targets[name], masks[name] = values[i], mask[i]
        return {
            "inputs": {"image": self._image_tensor(img, self.image_path(i), where)},
            "targets": targets,
            "masks": masks,
        }

    # ---- prediction -----------------------------------------------------------------------

    predict_suffixes = IMAGE_SUFFIXES
    predict_accepts = (
        "image files (PNG, JPEG, ...; resized to data.image_size like the manifest's images), a "
        "folder of them, or a CSV listing them (a manifest: its image column)"
    )

    def prediction_files(self, paths) -> list[Path]:
        return prediction_files(self, paths, list_column=self.image_column)

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Image files converted and resized exactly as the manifest's images are (``resize``
        False: refuse images of another size instead)."""
        images, sizes, problems = [], [], []
        for f in files:
            img = read_image_file(f)
            sizes.append(img.size)
            if resize is False and img.size != (self.size, self.size):
                problems.append(size_problem(f, img.size, (self.size, self.size), "resize=false"))
                continue
            images.append(self._image_tensor(img, f))
        if problems:
            raise DataError(problems[:10])
        return PreparedInputs({"image": torch.stack(images)}, [str(f) for f in files], file_stems(files), sizes)

    # ---- load -----------------------------------------------------------------------------

    def load(self) -> dict[str, Dataset]:
        self.scalar_targets()  # label problems surface before any image is decoded
        rows = self.split_rows()
        self.check_files()  # missing files surface now, also when decoded lazily
        if self.cache:
            full = self._decode_all()
            splits: dict[str, Dataset] = {s: full.subset(idx) for s, idx in rows.items()}
        else:
            splits = {s: LazyManifestDataset(self, idx.tolist()) for s, idx in rows.items()}
        check_nonempty(splits, self._data_where(), self._split_fix())
        given = self.split_column in self.table().header
        self.describe().artifacts["split"] = split_record(
            self.rows(),
            {
                "how": {
                    s: (
                        f"column {self.split_column!r}" if given and s in self._given_splits(self.table()) else "carved"
                    )
                    for s in ("val", "test")
                },
                "seed": self.split_seed,
                "fractions": dict(self.fractions),
            },
        )
        return splits

    def check_files(self) -> None:
        """Every image, mask and map file that the manifest names exists (nothing is decoded).
        A missing folder is reported once, with the number of rows that point into it."""
        table, problems = self.table(), Problems()
        spec = self.describe()
        dense = [self.columns()[n] for n, t in spec.targets.items() if t.kind in DENSE_KINDS]
        for column in [self.image_column, *dense]:
            key = "data.image_column" if column == self.image_column else "data.targets"
            for i, cell in enumerate(table.column(column, key)):
                if is_missing(cell):
                    if column == self.image_column:
                        problems.add(
                            Problem(
                                str(table.path),
                                f"{table.where(i)}, column {column!r}: no image path",
                                cell,
                                fix="fill in the image path or remove the row",
                            )
                        )
                    continue
                path = self.file_of(cell)
                if path.is_file():
                    continue
                where = self._where(i, column)
                if _WINDOWS_ABSOLUTE.match(cell.strip()):
                    problems.add(
                        Problem(
                            str(table.path),
                            f"{table.where(i)}, column {column!r}: a Windows absolute path, not a file on this machine",
                            cell.strip(),
                            "paths relative to the manifest's folder (with / or \\), or absolute paths of this machine",
                            f"write the paths relative to the manifest's folder {self.folder}",
                        ),
                        group=("windows", column),
                    )
                elif path.is_dir():
                    problems.add(
                        Problem(
                            str(path),
                            f"is a folder, not an image file ({where})",
                            fix="name the image file itself in the manifest",
                        )
                    )
                elif path.parent.is_dir():
                    problems.add(
                        Problem(
                            str(path),
                            f"image file not found ({where})",
                            fix="correct the path in the manifest (relative paths "
                            "resolve against the manifest's folder)",
                        )
                    )
                else:
                    problems.add(
                        Problem(
                            str(path.parent),
                            f"folder not found ({where} names {cell.strip()!r} in it)",
                            fix="check the folder; relative paths in the manifest "
                            f"resolve against the manifest's folder {self.folder}",
                        ),
                        group=("folder", path.parent),
                    )
        problems.raise_if_any()

    def _decode_all(self) -> InMemoryDataset:
        """Every row decoded and stacked; decode errors of many rows reported together."""
        samples, problems = [], Problems()
        for i in range(len(self.table().rows)):
            try:
                samples.append(self.sample(i))
            except DataError as e:
                for p in e.problems:
                    problems.add(p)
        problems.raise_if_any()
        if not samples:
            empty = torch.zeros(0, self.channels, self.size, self.size)
            return InMemoryDataset({"image": empty}, {})
        return InMemoryDataset(*(stack(samples, part) for part in ("inputs", "targets", "masks")))

    def split_rows(self) -> dict[str, torch.Tensor]:
        """Row indices per split: from the split column where given, the rest carved."""
        table = self.table()
        if self.split_column in table.header:
            given = self._given_splits(table)
            train = given.get("train", torch.zeros(0, dtype=torch.long))
        else:
            given, train = {}, torch.arange(len(table.rows))
        fv = 0.0 if "val" in given else self.fractions["val"]
        ft = 0.0 if "test" in given else self.fractions["test"]
        idx = split_indices(len(train), fv, ft, self.split_seed)
        idx = {k: v.sort().values for k, v in idx.items()}
        out = {s: given[s] if s in given else train[idx[s]] for s in ("val", "test")}
        return {"train": train[idx["train"]], **out}  # each split in manifest order

    def _given_splits(self, table: Table) -> dict[str, torch.Tensor]:
        problems, rows = Problems(), {"train": [], "val": [], "test": []}
        for i, cell in enumerate(table.column(self.split_column, "data.split_column")):
            split = SPLIT_NAMES.get(cell.strip().lower())
            if split is None:
                problems.add(
                    Problem(
                        str(table.path),
                        f"{table.where(i)}, column {self.split_column!r}: unknown split",
                        cell,
                        "train, val (or valid, validation), test",
                    )
                )
            else:
                rows[split].append(i)
        problems.raise_if_any()
        return {s: torch.tensor(r, dtype=torch.long) for s, r in rows.items() if r}


class LazyManifestDataset(Dataset):
    """Decodes one manifest row per ``__getitem__`` (``cache: false``)."""

    def __init__(self, source: ImageManifestSource, rows: list[int]):
        self.source = source
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.source.sample(self.rows[i])
