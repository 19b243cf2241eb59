"""The School data (Inner London Education Authority exam scores; Goldstein 1991) in the MATLAB
files of the multi-task learning literature (Argyriou, Evgeniou & Pontil): one regression task
per school, on one of the 10 published 75/25 splits.

``path`` is the folder that holds ``school_b.mat`` (``x``: 28 x N features, the last a bias
column of ones; ``y``: N exam scores; ``task_indexes``: the 1-based first row of each school, the
rows being sorted by school) and ``school_<k>_indexes.mat`` for k = 1..10 (``tr``, ``tst``: 1-based
rows of the train and test parts of split k). Nothing is downloaded.

The table it makes: features ``x1`` .. ``x28``, the target column ``score`` and the grouping
column ``school`` (1 .. 139, from ``task_indexes``); through the ``csv`` source's ``group_by``
the target ``school`` becomes the targets ``school_1`` .. ``school_139``, each labelled only in its
school's rows (the other rows are missing labels). Split ``split`` gives the train and test rows;
val is carved from the train rows by ``val_fraction`` (seeded by ``split_seed``). Features are
z-scored with the train split's statistics (``standardize``) and so are the targets
(``standardize_targets``; metrics and predictions stay in exam-score points).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from ...config.params import Range, Seed, Text
from ...errors import DataError, Problem
from ...registry import SOURCES
from ..base import Fraction
from ..readers import mat_variables, number_cell, numeric_matrix, table_of
from ..tabular import Table
from .csv import CsvSource, resolve

DATA_FILE = "school_b.mat"


def split_file(split: int) -> str:
    return f"school_{split}_indexes.mat"


@SOURCES.register("school")
class SchoolSource(CsvSource):
    """School: 139 regression tasks (one per school) on a published split; see the module docstring."""

    def __init__(
        self,
        *,
        path: Annotated[str, Text("the folder holding school_b.mat and school_<k>_indexes.mat")] | None = None,
        split: Annotated[int, Range(ge=1, le=10)] = 1,
        val_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
        standardize: bool = True,
        standardize_targets: bool = True,
    ):
        self.folder = _folder(path, split)
        self.split = split
        super().__init__(
            path=str(self.folder / DATA_FILE),
            targets={"school": "score"},
            group_by="school",
            standardize=standardize,
            standardize_targets=standardize_targets,
            val_fraction=val_fraction,
            test_fraction=0.0,
            split_seed=split_seed,
        )

    def _where(self) -> str:
        return f"data (school {self.folder}, split {self.split})"

    def tables(self) -> dict[str, Table]:
        if self._tables is None:
            self._tables = {"train": self._table()}
        return self._tables

    def _table(self) -> Table:
        path = self.folder / DATA_FILE
        st = path.stat()  # the parsed file is kept while it is unchanged: baseline=stl reads it once per task
        columns = _columns(str(path.resolve()), st.st_mtime_ns, st.st_size)
        return table_of(path, {k: list(v) for k, v in columns.items()})

    def given_split(self, n: int) -> tuple[dict[str, list[int]], str]:
        path = self.folder / split_file(self.split)
        v = mat_variables(path)
        _expect(path, v, {"tr": 2, "tst": 2})
        parts = {s: sorted(int(i) - 1 for i in v[k].reshape(-1)) for s, k in (("train", "tr"), ("test", "tst"))}
        bad = [i + 1 for part in parts.values() for i in part if not 0 <= i < n]
        if bad or set(parts["train"]) & set(parts["test"]):
            raise DataError(
                [
                    Problem(
                        str(path),
                        f"tr and tst must be distinct 1-based rows of {DATA_FILE} (1..{n})",
                        bad[:5] or "rows in both",
                        fix="use the unchanged split files of the School split package",
                    )
                ]
            )
        return parts, f"published split {self.split} ({split_file(self.split)}: tst)"


@functools.lru_cache(maxsize=2)
def _columns(where: str, mtime_ns: int, size: int) -> dict[str, list[str]]:
    """The table columns of ``school_b.mat`` at ``where`` (its modification time and size key the
    cache: a changed file is read again). Validation and every run of a process (139 single-task
    baselines validate and load it 278 times) share one parse, about a second each."""
    path = Path(where)
    v = mat_variables(path)
    _expect(path, v, {"x": 2, "y": 2, "task_indexes": 2})
    x, y, starts = v["x"], v["y"].reshape(-1), v["task_indexes"].reshape(-1).astype(int)
    n = y.shape[0]
    if x.shape[0] != n:
        x = x.T
    if x.shape[0] != n or list(starts) != sorted(set(starts)) or starts[0] != 1 or starts[-1] > n:
        raise DataError(
            [
                Problem(
                    str(path),
                    f"x {tuple(v['x'].shape)}, y {tuple(v['y'].shape)} and task_indexes (the first row of each "
                    "school, 1-based and increasing) do not fit together",
                    fix="use the unchanged school_b.mat of the School split package",
                )
            ]
        )
    school = [0] * n
    for k, start in enumerate(starts):
        end = starts[k + 1] - 1 if k + 1 < len(starts) else n
        school[start - 1 : end] = [k + 1] * (end - start + 1)
    columns = {f"x{j + 1}": [number_cell(c) for c in x[:, j]] for j in range(x.shape[1])}
    columns["score"] = [number_cell(c) for c in y]
    columns["school"] = [str(s) for s in school]
    return columns


def _folder(path: str | None, split: int) -> Path:
    """The data folder, refused with the key and the fix when it is not given or lacks a file."""
    wanted = f"a folder holding {DATA_FILE} and {split_file(split)}"
    if not path:
        raise DataError([Problem("data.path", "no data folder given", allowed=wanted, fix="set data.path=FOLDER")])
    folder = resolve(path)
    if folder.is_file() and folder.name == DATA_FILE:
        folder = folder.parent
    missing = [f for f in (DATA_FILE, split_file(split)) if not (folder / f).is_file()]
    if missing:
        why = "no such folder" if not folder.is_dir() else f"the folder lacks {', '.join(missing)}"
        raise DataError(
            [
                Problem(
                    "data.path",
                    f"{why} ({folder}; relative paths resolve against {Path.cwd()})",
                    path,
                    wanted,
                    "set data.path to the folder of the School .mat files (school_b.mat, school_1_indexes.mat, ...)",
                )
            ]
        )
    return folder


def _expect(path: Path, variables: dict, wanted: dict[str, int]) -> None:
    missing = [k for k in wanted if k not in variables or not numeric_matrix(variables[k])]
    if missing:
        raise DataError(
            [
                Problem(
                    str(path),
                    "lacks the numeric variable(s) " + ", ".join(missing),
                    ", ".join(sorted(variables)) or "no variable",
                    fix="use the unchanged files of the School split package",
                )
            ]
        )
