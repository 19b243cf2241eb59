"""Tabular data from CSV (or TSV; Parquet when pyarrow is installed): one row per sample.

Input ``features``: float32 [F], the feature columns in the order of ``features`` (default: every
column that is not a target column and not in ``exclude``, in file order; ``exclude`` beside an
explicit ``features`` list is refused, as it would be ignored). A column listed in
``categorical`` is one-hot encoded in place: one input per category of the train split (named
``column=category`` in ``artifacts["feature_names"]``); a category the train split lacks (in val,
test or at prediction) encodes as all zeros, with a warning.

Targets: ``targets`` maps a target name to its column. The kind of each target is ``kinds[name]``
when given (classification, binary or regression), classification when ``classes[name]`` is
given, else inferred from the column's values over all files:

- all labelled values numbers -> ``regression`` (integer codes too: say ``kinds: {t: classification}``);
- mostly text -> ``classification``;
- mostly numbers with some cells that are not (one ``abc``, ``inf`` or ``3,5`` in a numeric
  column) -> refused, naming those cells: declare the kind.

Classification labels are mapped to 0..K-1 in the order of ``classes[name]`` when given (a label
outside it is an error), else the labels of the train split in sorted order (numerically when all
are numbers, so "2" < "10"); a label only val or test rows have is refused (it would become an
extra class), and so is a single class. Binary targets accept 0/1, true/false and yes/no (any
case) and need both values in the train split (unless ``classes[name]`` declares the two). Empty
cells (and NA, N/A, NaN, null) in a target column are missing labels: the mask is False, the other
targets of the row are unaffected; a target without any label in the train split is refused.
Regression values beyond ±1e15 are refused (their squared error overflows float32). The label
maps are saved in the run dir through ``DataSpec.artifacts["label_maps"]``.

Feature cells must be numbers within float32's range (or categories, for ``categorical``
columns). A missing feature cell (empty, NA, N/A, NaN, null) is an error unless ``impute`` is
"mean" (the column's mean over the train split; for a one-hot column, the category frequencies)
or "zero"; a cell that is not a number is always an error (declare the column ``categorical`` or
leave it out). ``standardize`` z-scores every numeric input with the train split's mean and
standard deviation, computed in float64 (a constant column is only centred; one-hot inputs stay
0/1). Statistics, fill values and categories land in ``artifacts`` too, filled in by ``load()``.

Splits: ``val_path`` / ``test_path`` are used as given; a split without a file is carved from
the ``path`` file by the seeded ``val_fraction`` / ``test_fraction``. Which rows form each split
is recorded in ``artifacts["split"]`` (data.json): files with their sha256, row counts, the hash
of each split's row numbers and the val/test row numbers.

Errors name the file (absolute path), the column, the row (1-based data row, i.e. not counting
the header, with the file line in brackets) and the bad value. The cell-level helpers live in
:mod:`mtl_cli.data.tabular` (re-exported here for the other CSV-based sources, with
``read_table``, ``fraction_problems`` and ``resolve``).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import torch

from ...config.params import Check, Len, PosInt, Range, Seed, Text
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
    split_indices,
)
from ..readers import read_arff, read_mat
from ..tabular import (
    MISSING,
    FeatureEncoder,
    FeaturePlan,
    Problems,
    SplitRows,
    Table,
    apply_standardize,
    cells,
    check_binary,
    check_labelled,
    class_map,
    delimiter_hint,
    encode_scalar,
    fill_values,
    infer_kind,
    is_missing,
    label_map,
    missing_column,
    ordered_labels,
    plan_categories,
    split_record,
    standardize_statistics,
    to_float,
    warn_constant,
    warn_large_features,
)

log = logging.getLogger("mtl_cli")

__all__ = [
    "MISSING",
    "Column",
    "ClassName",
    "CsvSource",
    "Delimiter",
    "Problems",
    "Table",
    "encode_scalar",
    "fraction_problems",
    "infer_kind",
    "is_missing",
    "label_map",
    "missing_column",
    "read_table",
    "resolve",
    "to_float",
]

ScalarKind = Literal["classification", "binary", "regression"]
SCALAR_KINDS = get_args(ScalarKind)

#: value domains shared with the other CSV-based sources
Column = Annotated[str, Text("a column name")]
Delimiter = Annotated[str, Check(lambda d: len(d) == 1, "of one character")]
#: a class label as the column holds it; integer codes (0, 1, ...) and true/false are read as their
#: text (a negative code is written as a string: '-1')
ClassName = Annotated[str, Text("a class label of the column")] | Annotated[int, Range(ge=0)] | bool
#: the declared classes of a target, in index order
ClassList = Annotated[list[ClassName], Len(min=2)]


def class_names(classes: dict[str, list] | None) -> dict[str, list[str]]:
    """Declared classes as the column's text: 3 -> "3", True -> "true"."""
    return {k: [str(c).lower() if isinstance(c, bool) else str(c) for c in v] for k, v in (classes or {}).items()}


def fraction_problems(fractions: dict[str, float], carved: dict[str, bool]) -> list[Problem]:
    """The fractions of a file carved as val and test (``carved``: which are) must leave rows to train."""
    used = {s: f for s, f in fractions.items() if carved[s]}
    if len(used) < 2 or sum(used.values()) < 1:
        return []
    return [
        Problem(
            "data.test_fraction",
            "data.val_fraction + data.test_fraction must be below 1: the rest of the rows is the train split",
            used["test"],
            f"a number below {1 - used['val']:g} (with data.val_fraction={used['val']:g})",
            "lower data.val_fraction or data.test_fraction",
        )
    ]


def resolve(path: str) -> Path:
    """A config path made absolute against the current working directory."""
    return Path(path).expanduser().resolve()


def file_problem(path: Path, message: str, fix: str, value: object = None) -> DataError:
    return DataError([Problem(str(path), message, value, fix=fix)])


#: the table files the source reads (by suffix; others are read as CSV)
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".arff", ".mat")


def read_table(path: Path, delimiter: str | None = None) -> Table:
    """Read a CSV/TSV (stdlib csv), Parquet, ARFF or MATLAB file as a Table of text cells
    (ARFF and MATLAB through :mod:`mtl_cli.data.readers`)."""
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
        raise file_problem(
            path,
            "is a folder, not a file",
            "give the file itself"
            + (f", e.g. {path / inside[0]} (the folder holds {', '.join(inside[:5])})" if inside else ""),
        )
    if not path.is_file():
        raise file_problem(path, "file not found", f"check the path (relative paths resolve against {Path.cwd()})")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _check_rows(_read_parquet(path))
    if path.suffix.lower() == ".arff":
        return _check_rows(read_arff(path))
    if path.suffix.lower() == ".mat":
        return _check_rows(read_mat(path))
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = _read_csv(path, csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as e:
        raise file_problem(path, f"not UTF-8 text ({e.reason} at byte {e.start})", "save the file as UTF-8 CSV") from e
    except csv.Error as e:
        raise file_problem(path, f"not valid CSV: {e}", "fix the file's quoting") from e
    return _check_rows(table)


def _check_rows(table: Table) -> Table:
    """The table, unless it has a header but no data rows: every split needs samples."""
    if not table.rows:
        raise file_problem(
            table.path, "file has a header but no data rows", "add the data rows (one per sample) below the header"
        )
    return table


def _read_csv(path: Path, reader) -> Table:
    header = next(reader, None)
    if not header:
        raise file_problem(path, "file is empty (no header row)", "add a header row")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise file_problem(path, "duplicate column names in the header", "rename the columns", ", ".join(dupes))
    table, problems = Table(path, header, []), Problems()
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        table.rows.append(row)
        table.lines.append(reader.line_num)
        if len(row) != len(header):
            fix = "fix the row (quote cells that contain the delimiter)"
            d = delimiter_hint(table)
            if d is not None:
                fix = f"the header parsed as one column {header[0]!r}: the file looks {d!r}-separated; " + (
                    "name it .tsv" if d == "\t" else f"set data.delimiter='{d}'"
                )
            elif len(row) > len(header) and any(c.strip().isdigit() for c in row):
                fix += "; numbers with a decimal comma (3,5) split into two fields: write 3.5"
            problems.add(
                Problem(
                    str(path),
                    f"{table.where(len(table.rows) - 1)} has {len(row)} fields, the header has {len(header)}",
                    fix=fix,
                ),
                group=(path, len(row)),
            )
    problems.raise_if_any()
    return table


def _read_parquet(path: Path) -> Table:
    """Parquet through pyarrow, if installed (optional dependency)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise file_problem(
            path,
            "reading Parquet needs pyarrow, which is not installed",
            "pip install pyarrow, or save the data as CSV",
        ) from e
    data = pq.read_table(path)
    cols = [[_cell(v) for v in data.column(c).to_pylist()] for c in data.column_names]
    return Table(path, list(data.column_names), [list(r) for r in zip(*cols)])


def _cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def column_names(columns: list[str]) -> dict[str, str]:
    """Target name -> column for columns used as targets under their own names: characters other
    than letters, digits, ``_`` and ``-`` become ``_`` (task names may not hold ``.`` or ``/``), and
    a name taken already gets ``_2``, ``_3``, ..."""
    out: dict[str, str] = {}
    for column in columns:
        base = _NAME.sub("_", column).strip("_") or "target"
        name, k = base, 1
        while name in out:
            k += 1
            name = f"{base}_{k}"
        out[name] = column
    return out


def fold_rows(n: int, folds: int, fold: int, seed: int) -> dict[str, list[int]]:
    """Rows of fold ``fold`` (1-based) of a seeded ``folds``-fold partition of ``range(n)`` as
    test, the others as train; folds differ in size by at most one row, each in file order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    bounds = [round(n * k / folds) for k in range(folds + 1)]
    test = sorted(perm[bounds[fold - 1] : bounds[fold]])
    chosen = set(test)
    return {"train": [i for i in range(n) if i not in chosen], "test": test}


def scale_of(values: list[float]) -> dict[str, float]:
    """Mean and (population) standard deviation of ``values``, computed exactly (math.fsum);
    std 1 where there is no spread (one value, a constant target, no value: only centred)."""
    if not values:
        return {"mean": 0.0, "std": 1.0}
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std if std > 0 else 1.0}


@dataclass
class _Plan:
    """Resolved columns: features, target -> (column, kind), classification maps, split rows;
    with ``group_by``, ``groups``: target -> (its column's target, the group value it is labelled
    for); ``scaling``: regression target -> the train split's mean and std (``standardize_targets``)."""

    features: FeaturePlan
    targets: dict[str, tuple[str, str]]
    label_maps: dict[str, dict[str, int]]
    rows: SplitRows
    groups: dict[str, tuple[str, str]] = field(default_factory=dict)
    scaling: dict[str, dict[str, float]] = field(default_factory=dict)


@SOURCES.register("csv")
class CsvSource(DataSource):
    """Tabular CSV source; see the module docstring for inference, missing values and splits."""

    def __init__(
        self,
        *,
        path: Annotated[str, Text("the train file: CSV, TSV or Parquet")] | None = None,
        val_path: Annotated[str, Text("the val file")] | None = None,
        test_path: Annotated[str, Text("the test file")] | None = None,
        features: Annotated[list[Column], Len(min=1)] | None = None,
        exclude: list[Column] | None = None,
        categorical: Annotated[list[Column], Len(min=1)] | None = None,
        targets: dict[str, Column] | None = None,
        last_targets: PosInt | None = None,
        group_by: Column | None = None,
        kinds: dict[str, ScalarKind] | None = None,
        classes: dict[str, ClassList] | None = None,
        standardize: bool = False,
        standardize_targets: bool = True,
        impute: Literal["mean", "zero"] | None = None,
        delimiter: Delimiter | None = None,
        val_fraction: Fraction = 0.1,
        test_fraction: Fraction = 0.1,
        folds: Annotated[int, Range(ge=2)] | None = None,
        fold: PosInt = 1,
        split_seed: Seed = 0,
    ):
        self.paths = {"train": path, "val": val_path, "test": test_path}
        self.features = list(features) if features is not None else None
        self.exclude = list(exclude or [])
        self.categorical = list(categorical or [])
        self.targets = dict(targets or {})
        self.last_targets = last_targets
        self.group_by = group_by
        self.kinds = dict(kinds or {})
        self.classes = class_names(classes)
        self.standardize = standardize
        self.standardize_targets = standardize_targets
        self.impute = impute
        self.delimiter = delimiter
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.folds, self.fold = folds, fold
        self.split_seed = split_seed
        self._check_config()
        self.artifacts: dict[str, Any] = {}  # shared with DataSpec; load() adds statistics
        self._tables: dict[str, Table] | None = None
        self._plan_cache: _Plan | None = None
        self._split_how: str | None = None  # how a given split was made (given_split)
        self._recorded_scaling: dict | None = None  # a finished run's target scaling (use_recorded)

    def _check_config(self) -> None:
        problems = []
        if not self.paths["train"]:
            problems.append(Problem("data.path", "no CSV file given", fix="set data.path=FILE.csv"))
        if not self.targets and not self.last_targets:
            problems.append(
                Problem(
                    "data.targets",
                    "no targets given",
                    fix="map target names to columns, e.g. targets: {price: price}, or set data.last_targets=K "
                    "(the last K columns are targets)",
                )
            )
        problems += self._group_and_fold_problems()
        for key, names in (("kinds", self.kinds), ("classes", self.classes)) if not self.last_targets else ():
            for name in names:
                if name not in self.targets:
                    problems.append(
                        Problem(
                            f"data.{key}.{name}",
                            "not a target",
                            name,
                            ", ".join(self.targets),
                            "use a name from data.targets",
                        )
                    )
        for name in self.classes:
            if self.kinds.get(name) == "regression":
                problems.append(
                    Problem(
                        f"data.classes.{name}",
                        "a regression target has no classes",
                        self.classes[name],
                        fix=f"remove data.classes.{name}, or set data.kinds.{name} to classification or binary",
                    )
                )
        problems += fraction_problems(self.fractions, {s: not self.paths[s] for s in ("val", "test")})
        both = set(self.features or []) & set(self.targets.values())
        if both:
            problems.append(
                Problem(
                    "data.features",
                    "columns are both features and targets",
                    ", ".join(sorted(both)),
                    fix="remove them from features",
                )
            )
        if self.features is not None and self.exclude:
            problems.append(
                Problem(
                    "data.exclude",
                    "has no effect beside an explicit data.features list (only the listed columns are features)",
                    self.exclude,
                    fix="remove the columns from data.features and drop data.exclude, or drop data.features "
                    "to use every column that is not a target or excluded",
                )
            )
        for column in self.categorical:
            why = None
            if column in self.targets.values():
                why = "is a target column"
            elif self.features is not None and column not in self.features:
                why = "is not in data.features"
            elif self.features is None and column in self.exclude:
                why = "is excluded (data.exclude)"
            if why:
                problems.append(
                    Problem(
                        "data.categorical",
                        f"column {column!r} {why}: only feature columns can be categorical",
                        column,
                        fix="list feature columns only",
                    )
                )
        if problems:
            raise DataError(problems)

    def _group_and_fold_problems(self) -> list[Problem]:
        problems = []
        group = self.group_by
        if group is not None and (group in self.targets.values() or group in (self.features or [])):
            problems.append(
                Problem(
                    "data.group_by",
                    "the grouping column cannot also be a target or a feature column",
                    group,
                    fix="remove it from data.targets and data.features (it is left out of the features by itself)",
                )
            )
        if group is not None and group in self.categorical:
            problems.append(Problem("data.categorical", "the grouping column is not a feature", group, fix="remove it"))
        if self.folds is not None and self.fold > self.folds:
            problems.append(
                Problem(
                    "data.fold",
                    f"there are {self.folds} folds (data.folds)",
                    self.fold,
                    f"1 to {self.folds}",
                    f"set data.fold to a number from 1 to {self.folds}",
                )
            )
        if self.folds is not None and self.paths["test"]:
            problems.append(
                Problem(
                    "data.folds",
                    "cross-validation folds make the test split, and data.test_path gives one too",
                    self.folds,
                    fix="drop data.test_path, or set data.folds=null",
                )
            )
        return problems

    # ---- describe -------------------------------------------------------------------------

    def tables(self) -> dict[str, Table]:
        """The given files read as text (once): train, and val/test where files are given."""
        if self._tables is None:
            self._tables = {split: read_table(resolve(p), self.delimiter) for split, p in self.paths.items() if p}
        return self._tables

    def given_split(self, n: int) -> tuple[dict[str, list[int]], str] | None:
        """Train and test rows (0-based rows of the train file; val too where given) fixed by the
        source rather than carved by the fractions, and how they were made; None to carve. Here
        the fold ``fold`` of a seeded ``folds``-fold cross-validation; sources that read published
        splits override it."""
        if self.folds is None:
            return None
        return fold_rows(n, self.folds, self.fold, self.split_seed), f"fold {self.fold} of {self.folds}"

    def split_rows(self) -> SplitRows:
        """Which rows of which file form each split: a file's every row, the rows of a given split
        (:meth:`given_split`; val carved from its train rows by ``val_fraction``), or the rows
        carved from the train file by the seeded fractions (each split in file order)."""
        tables = self.tables()
        train = tables["train"]
        fv = 0.0 if "val" in tables else self.fractions["val"]
        given = self.given_split(len(train.rows))
        if given is not None:
            parts, self._split_how = dict(given[0]), given[1]
            if "val" not in parts and "val" not in tables:
                pool = parts["train"]
                idx = split_indices(len(pool), fv, 0.0, self.split_seed)
                parts["val"] = sorted(pool[i] for i in idx["val"].tolist())
                parts["train"] = sorted(pool[i] for i in idx["train"].tolist())
        else:
            ft = 0.0 if "test" in tables else self.fractions["test"]
            idx = split_indices(len(train.rows), fv, ft, self.split_seed)
            parts = {s: idx[s].sort().values.tolist() for s in idx}
        rows: SplitRows = {"train": [(train, parts["train"])]}
        for s in ("val", "test"):
            rows[s] = [(tables[s], list(range(len(tables[s].rows))))] if s in tables else [(train, parts[s])]
        return rows

    def plan(self) -> _Plan:
        """Check columns against every file, the split sizes, and settle feature columns, target
        kinds and classes (from the train split), the groups and the targets' scaling."""
        if self._plan_cache is None:
            tables = self.tables()
            self._check_columns(tables)
            rows = self.split_rows()
            sizes = {s: sum(len(i) for _, i in parts) for s, parts in rows.items()}
            if not sizes["train"]:  # the label checks need train rows; empty val/test are refused by load()
                check_split_sizes(sizes, self._where())
            columns = self.target_columns(tables["train"])
            targets, maps = {}, {}
            for name, col in columns.items():
                kind = self.kinds.get(name) or (
                    "classification" if name in self.classes else infer_kind(rows, col, name)
                )
                check_labelled(rows, col, name)
                if kind == "classification":
                    maps[name] = class_map(rows, col, name, self.classes.get(name))
                elif kind == "binary":
                    check_binary(rows, col, name, self.classes.get(name))
                targets[name] = (col, kind)
            groups = self._groups(rows, list(targets))
            if groups:
                maps = {name: maps[base] for name, (base, _) in groups.items() if base in maps}
                targets = {name: targets[base] for name, (base, _) in groups.items()}
            train = tables["train"]
            nominal = [c for c in train.nominal if c in self._feature_columns(train) and c not in self.categorical]
            features = FeaturePlan(self._feature_columns(train), plan_categories(rows, self.categorical + nominal))
            plan = _Plan(features, targets, maps, rows, groups)
            if self._recorded_scaling is not None:
                plan.scaling = dict(self._recorded_scaling)
            elif self.standardize_targets:
                plan.scaling = self._scaling(plan)
            self._plan_cache = plan
        return self._plan_cache

    def use_recorded(self, artifacts: dict) -> None:
        """The run's target scaling as data.json records it (none when it records none: the run
        trained on raw values), whatever ``standardize_targets`` says now."""
        self._recorded_scaling = dict(artifacts.get("target_scaling") or {})
        if self._plan_cache is not None:
            self._plan_cache.scaling = dict(self._recorded_scaling)

    def target_columns(self, train: Table) -> dict[str, str]:
        """Target name -> column: ``targets``, then the last ``last_targets`` columns of the train
        file under their own names (see :func:`column_names`); a name in ``kinds`` or ``classes``
        that is none of them is refused."""
        out = dict(self.targets)
        if self.last_targets:
            if self.last_targets >= len(train.header):
                raise DataError(
                    [
                        Problem(
                            "data.last_targets",
                            f"{train.path} has {len(train.header)} columns: the last {self.last_targets} as targets "
                            "would leave no feature",
                            self.last_targets,
                            f"1 to {len(train.header) - 1}",
                            "set data.last_targets to the number of target columns at the end of the file",
                        )
                    ]
                )
            taken = set(out.values())
            last = [c for c in train.header[-self.last_targets :] if c not in taken]
            out.update({n: c for n, c in column_names(last).items() if n not in out})
            problems = [
                Problem(f"data.{key}.{name}", "not a target", name, ", ".join(out), "use a target's name")
                for key, names in (("kinds", self.kinds), ("classes", self.classes))
                for name in names
                if name not in out
            ]
            if problems:
                raise DataError(problems)
        return out

    def _groups(self, rows: SplitRows, names: list[str]) -> dict[str, tuple[str, str]]:
        """With ``group_by``: one target per target and value of the grouping column in the train
        split (``<target>_<value>``, sorted as class labels are), labelled only in that group's
        rows. A row whose group the train split lacks has no label (warned)."""
        if self.group_by is None:
            return {}
        counts: dict[str, int] = {}
        for _, _, _, cell in cells(rows, self.group_by, "data.group_by", ["train"]):
            if not is_missing(cell):
                counts[cell.strip()] = counts.get(cell.strip(), 0) + 1
        values = ordered_labels(counts)
        unseen = sum(
            1
            for _, _, _, cell in cells(rows, self.group_by, "data.group_by", ["val", "test"])
            if not is_missing(cell) and cell.strip() not in counts
        )
        if unseen:
            log.warning(
                "%s: %d val/test row(s) belong to groups (column %r) that no train row has: they have no label "
                "for any task",
                self._where(),
                unseen,
                self.group_by,
            )
        out = {}
        for base in names:
            suffixes = column_names(values)  # group values as names: '.', '/', spaces become '_'
            out.update({f"{base}_{suffix}": (base, value) for suffix, value in suffixes.items()})
        return out

    def _scaling(self, plan: _Plan) -> dict[str, dict[str, float]]:
        """Mean and std of each regression target over its labelled train rows (of its group)."""
        values: dict[str, list[float]] = {}
        column_of = {name: col for name, (col, kind) in plan.targets.items() if kind == "regression"}
        by_column: dict[str, dict[str, list[float]]] = {}  # column -> group value ('' without groups) -> values
        for col in set(column_of.values()):
            found = by_column.setdefault(col, {})
            for _, table, i, cell in cells(plan.rows, col, "data.targets", ["train"]):
                v = to_float(cell) if not is_missing(cell) else None
                if v is not None:
                    g = table.rows[i][table.index(self.group_by, "data.group_by")].strip() if self.group_by else ""
                    found.setdefault(g, []).append(v)
        for name, col in column_of.items():
            group = plan.groups[name][1] if name in plan.groups else ""
            values[name] = by_column[col].get(group, [])
        return {name: scale_of(v) for name, v in values.items()}

    def _where(self) -> str:
        return f"data (csv {resolve(self.paths['train'] or '')})"

    def _feature_columns(self, train: Table) -> list[str]:
        if self.features is not None:
            return list(self.features)
        used = set(self.target_columns(train).values()) | set(self.exclude) | {self.group_by}
        return [c for c in train.header if c not in used]

    def _check_columns(self, tables: dict[str, Table]) -> None:
        problems = Problems()
        wanted = [(c, "data.targets") for c in self.targets.values()]
        wanted += [(c, "data.features") for c in self.features or []]
        wanted += [(c, "data.exclude") for c in self.exclude]
        wanted += [(c, "data.categorical") for c in self.categorical]
        wanted += [(c, "data.group_by") for c in [self.group_by] if c is not None]
        own = set(self.targets.values())
        wanted += [(c, "data.last_targets") for c in self.target_columns(tables["train"]).values() if c not in own]
        for table in tables.values():
            for column, key in wanted:
                if column not in table.header:
                    problems.add(missing_column(table, column, key))
        problems.raise_if_any()

    def describe(self) -> DataSpec:
        plan = self.plan()
        targets = {}
        for name, (_, kind) in plan.targets.items():
            names = list(plan.label_maps[name]) if name in plan.label_maps else None
            targets[name] = TargetSpec(
                name, kind, (), len(names) if names else None, names, scaling=plan.scaling.get(name)
            )
        self.artifacts["label_maps"] = plan.label_maps
        self.artifacts["targets"] = {name: col for name, (col, _) in plan.targets.items()}
        if plan.scaling:
            self.artifacts["target_scaling"] = plan.scaling
        if plan.groups:
            self.artifacts["groups"] = {"column": self.group_by, "of": {n: list(g) for n, g in plan.groups.items()}}
        self.artifacts["features"] = plan.features.columns
        if plan.features.categories:
            self.artifacts["categories"] = plan.features.categories
            self.artifacts["feature_names"] = plan.features.names
        inputs = {"features": InputSpec("features", (plan.features.width,), "tabular")}
        return DataSpec(inputs, targets, self.artifacts)

    # ---- load -----------------------------------------------------------------------------

    def load(self) -> dict[str, InMemoryDataset]:
        self.describe()  # fills artifacts, checks columns and labels
        plan = self.plan()
        encoder = FeatureEncoder(plan.features, self.impute)
        parts = {split: self._encode(table, encoder) for split, table in self.tables().items()}
        encoder.log_unseen(self._where())
        splits = self._carve(parts, plan.rows)
        check_nonempty(splits, self._where())
        for name, (_, kind) in plan.targets.items():
            if kind == "regression":
                warn_constant(name, splits["train"].targets[name], splits["train"].masks[name])
        self._fill_missing(splits)
        for name, scale in plan.scaling.items():  # the tasks learn (y - mean) / std; metrics undo it
            for ds in splits.values():
                y = ds.targets[name]
                ds.targets[name] = ((y.double() - scale["mean"]) / scale["std"]).float()
        if self.standardize:
            self._standardize(splits)
        else:
            warn_large_features(splits["train"].inputs["features"], plan.features.names, self._where())
        self.artifacts["split"] = split_record(
            plan.rows,
            {
                "how": {
                    s: (
                        "file"
                        if self.paths[s]
                        else (
                            self._split_how
                            if self._split_how and s == "test"
                            else f"carved from the train file{' (the given train rows)' if self._split_how else ''}"
                        )
                    )
                    for s in ("val", "test")
                },
                "seed": self.split_seed,
                "fractions": {s: (None if self.paths[s] else f) for s, f in self.fractions.items()},
            },
        )
        return splits

    def _encode(self, table: Table, encoder: FeatureEncoder) -> InMemoryDataset:
        """Features (NaN where missing) and targets of one file; all bad cells in one error."""
        plan, problems = self.plan(), Problems()
        x = encoder.encode(table, range(len(table.rows)), problems)
        targets, masks = {}, {}
        own = {name: plan.groups[name][0] if name in plan.groups else name for name in plan.targets}
        encoded = {}  # each column once, whatever the number of groups
        for name, (column, kind) in plan.targets.items():
            if own[name] not in encoded:
                encoded[own[name]] = encode_scalar(table, column, kind, plan.label_maps.get(name), problems)
            targets[name], masks[name] = encoded[own[name]]
        if plan.groups and self.group_by is not None:
            values = sorted({value for _, value in plan.groups.values()})
            code = {v: k for k, v in enumerate(values)}
            groups = torch.tensor([code.get(c.strip(), -1) for c in table.column(self.group_by, "data.group_by")])
            for name, (_, value) in plan.groups.items():
                masks[name] = masks[name] & (groups == code[value])
        problems.raise_if_any()
        return InMemoryDataset({"features": x}, targets, masks)

    @staticmethod
    def _carve(parts: dict[str, InMemoryDataset], rows: SplitRows) -> dict[str, InMemoryDataset]:
        """Splits without a file are the train file's rows of ``rows`` (each in file order)."""
        full = parts["train"]
        out = {
            s: parts[s] if s in parts else full.subset(torch.tensor(rows[s][0][1], dtype=torch.long))
            for s in ("val", "test")
        }
        return {"train": full.subset(torch.tensor(rows["train"][0][1], dtype=torch.long)), **out}

    def _fill_missing(self, splits: dict[str, InMemoryDataset]) -> None:
        if self.impute is None:
            return
        fill = fill_values(splits["train"].inputs["features"], self.impute)
        for ds in splits.values():
            x = ds.inputs["features"]
            ds.inputs["features"] = torch.where(x.isnan(), fill, x)
        self.artifacts["impute"] = {"method": self.impute, "values": fill.tolist()}

    def _standardize(self, splits: dict[str, InMemoryDataset]) -> None:
        mean, std = standardize_statistics(splits["train"].inputs["features"], self.plan().features.one_hot())
        for ds in splits.values():
            ds.inputs["features"] = apply_standardize(ds.inputs["features"], mean, std)
        self.artifacts["standardize"] = {"mean": mean.tolist(), "std": std.tolist()}

    # ---- prediction -------------------------------------------------------------------------

    predict_suffixes = TABLE_SUFFIXES
    predict_accepts = "tables (CSV, TSV, Parquet, ARFF, MATLAB) with the run's feature columns (others are ignored)"

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Rows of tables as training rows: the run's feature columns in the run's order,
        categorical columns one-hot with the run's categories (an unseen one: all zeros, with a
        warning), missing cells imputed and features standardised with the training split's
        statistics (those recorded in ``artifacts`` when there, else recomputed from the
        training files)."""
        if artifacts.get("features"):
            plan = FeaturePlan(list(artifacts["features"]), dict(artifacts.get("categories") or {}))
        else:
            plan = self.plan().features
        columns = plan.columns
        fill, scale = self._statistics(artifacts)
        encoder = FeatureEncoder(plan, self.impute)
        xs, names, stems = [], [], []
        for f in files:
            table = read_table(Path(f).resolve(), self.delimiter)
            missing = [c for c in columns if c not in table.header]
            if missing:
                raise DataError(
                    [
                        Problem(
                            str(table.path),
                            "feature column(s) of the run are not in the header",
                            ", ".join(missing),
                            allowed="columns " + ", ".join(map(repr, columns)),
                            fix="add the columns (names are case-sensitive); other columns are ignored",
                        )
                    ]
                )
            problems = Problems()
            xs.append(encoder.encode(table, range(len(table.rows)), problems))
            problems.raise_if_any()
            names += [f"{f}:row {i + 1}" for i in range(len(table.rows))]
            stems += [f"{table.path.stem}_row{i + 1}" for i in range(len(table.rows))]
        encoder.log_unseen("input")
        x = torch.cat(xs)
        if fill is not None:
            x = torch.where(x.isnan(), torch.tensor(fill, dtype=x.dtype), x)
        if scale is not None:
            x = apply_standardize(x, scale["mean"], scale["std"])
        return PreparedInputs({"features": x}, names, stems)

    def _statistics(self, artifacts: dict) -> tuple[list[float] | None, dict | None]:
        """(imputation values or None, standardisation mean/std or None) of the training split."""
        impute = artifacts.get("impute") if self.impute else None
        scale = artifacts.get("standardize") if self.standardize else None
        if (self.impute and impute is None) or (self.standardize and scale is None):
            self.load()  # the same statistics training computed, from the same files
            impute = self.artifacts.get("impute") if self.impute else None
            scale = self.artifacts.get("standardize") if self.standardize else None
        return (impute["values"] if impute else None), scale
