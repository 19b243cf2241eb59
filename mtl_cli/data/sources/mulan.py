"""The Mulan multi-target regression sets (ARFF files; Spyromitros-Xioufis et al., Machine
Learning 104:55-98, 2016): one regression task per target of the set chosen by ``set``.

``path`` is the folder that holds ``<set>.arff`` (the files as Mulan distributes them); the last
k attributes of each file are its targets, k being the Mulan table's count for the set
(:data:`TARGETS`), named by their attributes (characters other than letters, digits, ``_`` and
``-`` become ``_``). Nominal attributes (sf1, sf2) are one-hot encoded; missing feature values
(osales, scpf) are filled with the train split's mean (``impute``: mean or zero); a missing target
value is a missing label. The splits are the fold ``fold`` of a seeded ``folds``-fold
cross-validation (the paper's protocol for most sets) when ``folds`` is set, else the seeded
``val_fraction``/``test_fraction`` carve; val is carved from the train rows in both cases. Features
and targets are z-scored with the train split's statistics (metrics and predictions in the
targets' units). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from ...config.params import PosInt, Range, Seed, Text
from ...errors import DataError, Problem
from ...registry import SOURCES
from ..base import Fraction
from .csv import CsvSource, resolve

#: Mulan's multi-target regression sets and their number of targets (the last attributes)
TARGETS = {
    "andro": 6,
    "atp1d": 6,
    "atp7d": 6,
    "edm": 2,
    "enb": 2,
    "jura": 3,
    "oes10": 16,
    "oes97": 16,
    "osales": 12,
    "rf1": 8,
    "rf2": 8,
    "scm1d": 16,
    "scm20d": 16,
    "scpf": 3,
    "sf1": 3,
    "sf2": 3,
    "slump": 3,
    "wq": 14,
}
MulanSet = Literal[
    "andro",
    "atp1d",
    "atp7d",
    "edm",
    "enb",
    "jura",
    "oes10",
    "oes97",
    "osales",
    "rf1",
    "rf2",
    "scm1d",
    "scm20d",
    "scpf",
    "sf1",
    "sf2",
    "slump",
    "wq",
]


@SOURCES.register("mulan")
class MulanSource(CsvSource):
    """A Mulan multi-target regression set; see the module docstring."""

    def __init__(
        self,
        *,
        path: Annotated[str, Text("the folder holding the Mulan .arff files")] | None = None,
        set: MulanSet | None = None,
        impute: Literal["mean", "zero"] = "mean",
        folds: Annotated[int, Range(ge=2)] | None = None,
        fold: PosInt = 1,
        val_fraction: Fraction = 0.1,
        test_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
        standardize: bool = True,
        standardize_targets: bool = True,
    ):
        file = _file(path, set)
        self.set = set
        super().__init__(
            path=str(file),
            last_targets=TARGETS[str(set)],
            impute=impute,
            folds=folds,
            fold=fold,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
            standardize=standardize,
            standardize_targets=standardize_targets,
        )

    def _where(self) -> str:
        return f"data (mulan {self.set}: {self.paths['train']})"


def _file(path: str | None, name: str | None) -> Path:
    """``<path>/<set>.arff``, refused naming the key and the fix when a value is missing."""
    problems = []
    if not name:
        problems.append(
            Problem(
                "data.set",
                "no Mulan set chosen",
                allowed=", ".join(TARGETS),
                fix="set data.set=<name>, e.g. data.set=enb",
            )
        )
    if not path:
        problems.append(
            Problem(
                "data.path",
                "no data folder given",
                allowed="a folder holding the Mulan .arff files (enb.arff, ...)",
                fix="set data.path=FOLDER",
            )
        )
    if problems:
        raise DataError(problems)
    folder = resolve(str(path))
    if folder.is_file():
        folder = folder.parent
    file = folder / f"{name}.arff"
    if not file.is_file():
        have = sorted(p.stem for p in folder.glob("*.arff")) if folder.is_dir() else []
        raise DataError(
            [
                Problem(
                    "data.path",
                    ("no such folder" if not folder.is_dir() else f"the folder lacks {name}.arff")
                    + f" ({folder}; relative paths resolve against {Path.cwd()})",
                    path,
                    f"a folder holding {name}.arff" + (f" (this one has: {', '.join(have)})" if have else ""),
                    "set data.path to the folder of the Mulan .arff files, or choose a set it holds (data.set)",
                )
            ]
        )
    return file
