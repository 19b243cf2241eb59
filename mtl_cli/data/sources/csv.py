"""Tabular data from CSV (or TSV; Parquet when pyarrow is installed): one row per sample.

Input ``features``: float32 [F], the feature columns in the order of ``features`` (default: every
column that is not a target column and not in ``exclude``, in file order).

Targets: ``targets`` maps a target name to its column. The kind of each target is ``kinds[name]``
when given (classification, binary or regression), else inferred from the column's values over
all files, simply:

- any non-empty value that is not a number -> ``classification``;
- all values numbers -> ``regression`` (integer codes too: say ``kinds: {t: classification}``).

Classification labels are mapped to 0..K-1 in sorted order (numerically when all labels are
numbers, so "2" < "10"; else as strings), over the labels of all files; the mapping is saved in
the run dir through ``DataSpec.artifacts["label_maps"]``. Binary targets accept 0/1,
true/false and yes/no (any case). Empty cells (and NA, N/A, NaN, null) in a target column are
missing labels: the mask is False, the other targets of the row are unaffected.

Feature cells must be numbers. A missing feature cell (empty, NA, N/A, NaN, null) is an error
unless ``impute`` is "mean" (the column's mean over the train split) or "zero"; a cell that is
not a number is always an error (the column is probably categorical: leave it out with
``exclude`` or ``features``). ``standardize`` z-scores every feature with the train split's mean
and standard deviation (a constant column is only centred). Statistics and fill values land in
``artifacts`` too, filled in by ``load()``.

Splits: ``val_path`` / ``test_path`` are used as given; a split without a file is carved from
the ``path`` file by the seeded ``val_fraction`` / ``test_fraction``.

Errors name the file (absolute path), the column, the row (1-based data row, i.e. not counting
the header, with the file line in brackets) and the bad value. The helpers here (``read_table``,
``Table``, ``Problems``, ``label_map``, ``encode_scalar``) are shared by other CSV-based sources.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import torch

from ...config.params import Check, Len, Seed, Text
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
    split_indices,
)

MISSING = frozenset({"", "na", "n/a", "nan", "null"})
ScalarKind = Literal["classification", "binary", "regression"]
SCALAR_KINDS = get_args(ScalarKind)
BINARY_VALUES = {
    "0": 0.0,
    "1": 1.0,
    "0.0": 0.0,
    "1.0": 1.0,
    "false": 0.0,
    "true": 1.0,
    "no": 0.0,
    "yes": 1.0,
}
MAX_PROBLEMS = 10  # problems listed per error; the rest are counted

#: value domains shared with the other CSV-based sources
Column = Annotated[str, Text("a column name")]
Delimiter = Annotated[str, Check(lambda d: len(d) == 1, "of one character")]


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


def is_missing(cell: str) -> bool:
    """True for an empty cell or a usual missing-value marker (NA, N/A, NaN, null)."""
    return cell.strip().lower() in MISSING


def to_float(cell: str) -> float | None:
    """The cell as a finite float, None when it is not one."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def resolve(path: str) -> Path:
    """A config path made absolute against the current working directory."""
    return Path(path).expanduser().resolve()


class Problems:
    """Collects data problems so that one error lists many at once (capped at MAX_PROBLEMS).

    Problems added with the same ``group`` (e.g. one column of one file) are listed once, with
    the count of further rows alike, so a bad column does not drown the other problems.
    """

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.dropped = 0
        self.repeats: dict[object, list] = {}  # group -> [index in items, further count]

    def add(self, problem: Problem, group: object = None) -> None:
        if group is not None and group in self.repeats:
            self.repeats[group][1] += 1
            return
        if len(self.items) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        if group is not None:
            self.repeats[group] = [len(self.items), 0]
        self.items.append(problem)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        items = list(self.items)
        for i, more in self.repeats.values():
            if more:
                msg = f"{items[i].message}; and {more} more row(s) alike"
                items[i] = dataclasses.replace(items[i], message=msg)
        if self.dropped:
            items.append(Problem("...", f"{self.dropped} more problem(s) of the same kind"))
        raise DataError(items)


@dataclass
class Table:
    """A CSV file read as text: header, rows of cells, and the file line of each row."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int | None] = field(default_factory=list)

    def where(self, i: int) -> str:
        """Row ``i`` (0-based) as users count it: 1-based data row, plus the file line."""
        line = self.lines[i] if i < len(self.lines) else None
        return f"row {i + 1}" + (f" (line {line} of the file)" if line else "")

    def index(self, column: str, key: str) -> int:
        """Position of ``column``; DataError listing the available columns otherwise."""
        if column in self.header:
            return self.header.index(column)
        raise DataError([missing_column(self, column, key)])

    def column(self, column: str, key: str) -> list[str]:
        j = self.index(column, key)
        return [row[j] for row in self.rows]


def missing_column(table: Table, column: str, key: str) -> Problem:
    """Problem: config ``key`` names a column that ``table`` does not have."""
    return Problem(
        key=str(table.path),
        message=f"column {column!r} (from {key}) is not in the header",
        value=column,
        allowed="columns " + ", ".join(repr(c) for c in table.header),
        fix=f"correct {key} or the file's header (names are case-sensitive)",
    )


def file_problem(path: Path, message: str, fix: str, value: object = None) -> DataError:
    return DataError([Problem(str(path), message, value, fix=fix)])


def read_table(path: Path, delimiter: str | None = None) -> Table:
    """Read a CSV/TSV (stdlib csv) or Parquet file as a Table of text cells."""
    if not path.is_file():
        raise file_problem(path, "file not found", f"check the path (relative paths resolve against {Path.cwd()})")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _check_rows(_read_parquet(path))
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
            problems.add(
                Problem(
                    str(path),
                    f"{table.where(len(table.rows) - 1)} has {len(row)} fields, the header has {len(header)}",
                    fix="fix the row (quote cells that contain the delimiter)",
                )
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


def label_map(values: list[str]) -> dict[str, int]:
    """Sorted label -> index mapping of the non-missing values (numeric sort if all numbers)."""
    labels = {v.strip() for v in values if not is_missing(v)}
    if all(to_float(v) is not None for v in labels):
        ordered = sorted(labels, key=lambda v: (to_float(v), v))
    else:
        ordered = sorted(labels)
    return {label: i for i, label in enumerate(ordered)}


def infer_kind(values: list[str]) -> str:
    """classification if any non-missing value is not a number, else regression."""
    present = [v for v in values if not is_missing(v)]
    return "regression" if all(to_float(v) is not None for v in present) else "classification"


def encode_scalar(
    table: Table, column: str, kind: str, mapping: dict[str, int] | None, problems: Problems
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target values and masks of one column for a scalar kind; bad cells go to ``problems``."""
    cells = table.column(column, "targets")
    mask = torch.tensor([not is_missing(c) for c in cells], dtype=torch.bool)
    out = []
    for i, cell in enumerate(cells):
        value = 0.0 if is_missing(cell) else _scalar(cell.strip(), kind, mapping)
        if value is None:
            problems.add(_bad_target(table, i, column, cell, kind, mapping), group=(table.path, column))
            value = 0.0
        out.append(value)
    dtype = torch.long if kind == "classification" else torch.float32
    return torch.tensor(out, dtype=dtype), mask


def _scalar(cell: str, kind: str, mapping: dict[str, int] | None) -> float | int | None:
    if kind == "classification":
        return (mapping or {}).get(cell)
    if kind == "binary":
        return BINARY_VALUES.get(cell.lower())
    return to_float(cell)


def _bad_target(table: Table, i: int, column: str, cell: str, kind: str, mapping: dict[str, int] | None) -> Problem:
    allowed = {
        "classification": "one of " + ", ".join(repr(c) for c in (mapping or {})),
        "binary": "0/1, true/false or yes/no (any case), or an empty cell for a missing label",
        "regression": "a finite number, or an empty cell for a missing label",
    }[kind]
    fix = {
        "classification": "correct the label or declare it among the classes",
        "binary": "fix the value, or declare the target's kind as classification",
        "regression": "fix the value, or declare the target's kind as classification",
    }[kind]
    return Problem(
        str(table.path), f"{table.where(i)}, column {column!r}: not a valid {kind} label", cell, allowed, fix
    )


@dataclass
class _Plan:
    """Resolved columns: feature columns, target -> (column, kind), and classification maps."""

    features: list[str]
    targets: dict[str, tuple[str, str]]
    label_maps: dict[str, dict[str, int]]


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
        targets: dict[str, Column] | None = None,
        kinds: dict[str, ScalarKind] | None = None,
        standardize: bool = False,
        impute: Literal["mean", "zero"] | None = None,
        delimiter: Delimiter | None = None,
        val_fraction: Fraction = 0.1,
        test_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
    ):
        self.paths = {"train": path, "val": val_path, "test": test_path}
        self.features = list(features) if features is not None else None
        self.exclude = list(exclude or [])
        self.targets = dict(targets or {})
        self.kinds = dict(kinds or {})
        self.standardize = standardize
        self.impute = impute
        self.delimiter = delimiter
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self._check_config()
        self.artifacts: dict[str, Any] = {}  # shared with DataSpec; load() adds statistics
        self._tables: dict[str, Table] | None = None
        self._plan_cache: _Plan | None = None

    def _check_config(self) -> None:
        problems = []
        if not self.paths["train"]:
            problems.append(Problem("data.path", "no CSV file given", fix="set data.path=FILE.csv"))
        if not self.targets:
            problems.append(
                Problem(
                    "data.targets", "no targets given", fix="map target names to columns, e.g. targets: {price: price}"
                )
            )
        for name in self.kinds:
            if name not in self.targets:
                problems.append(
                    Problem(
                        f"data.kinds.{name}",
                        "not a target",
                        name,
                        ", ".join(self.targets),
                        "use a name from data.targets",
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
        if problems:
            raise DataError(problems)

    # ---- describe -------------------------------------------------------------------------

    def tables(self) -> dict[str, Table]:
        """The given files read as text (once): train, and val/test where files are given."""
        if self._tables is None:
            self._tables = {split: read_table(resolve(p), self.delimiter) for split, p in self.paths.items() if p}
        return self._tables

    def plan(self) -> _Plan:
        """Check columns against every file and settle feature columns and target kinds."""
        if self._plan_cache is None:
            tables = self.tables()
            self._check_columns(tables)
            targets = {
                name: (col, self.kinds.get(name) or infer_kind(self._values(col))) for name, col in self.targets.items()
            }
            maps = {
                name: label_map(self._values(col)) for name, (col, kind) in targets.items() if kind == "classification"
            }
            self._plan_cache = _Plan(self._feature_columns(tables["train"]), targets, maps)
        return self._plan_cache

    def _values(self, column: str) -> list[str]:
        return [v for t in self.tables().values() for v in t.column(column, "data.targets")]

    def _feature_columns(self, train: Table) -> list[str]:
        if self.features is not None:
            return list(self.features)
        used = set(self.targets.values()) | set(self.exclude)
        return [c for c in train.header if c not in used]

    def _check_columns(self, tables: dict[str, Table]) -> None:
        problems = Problems()
        wanted = [(c, "data.targets") for c in self.targets.values()]
        wanted += [(c, "data.features") for c in self.features or []]
        wanted += [(c, "data.exclude") for c in self.exclude]
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
            targets[name] = TargetSpec(name, kind, (), len(names) if names else None, names)
        self.artifacts["label_maps"] = plan.label_maps
        self.artifacts["features"] = plan.features
        inputs = {"features": InputSpec("features", (len(plan.features),), "tabular")}
        return DataSpec(inputs, targets, self.artifacts)

    # ---- load -----------------------------------------------------------------------------

    def load(self) -> dict[str, InMemoryDataset]:
        self.describe()  # fills artifacts, checks columns
        parts = {split: self._encode(table) for split, table in self.tables().items()}
        splits = self._carve(parts)
        check_nonempty(splits, f"data (csv {resolve(self.paths['train'])})")
        self._fill_missing(splits)
        if self.standardize:
            self._standardize(splits)
        return splits

    def _encode(self, table: Table) -> InMemoryDataset:
        """Features (NaN where missing) and targets of one file; all bad cells in one error."""
        plan, problems = self.plan(), Problems()
        x = self._features(table, plan.features, problems)
        targets, masks = {}, {}
        for name, (column, kind) in plan.targets.items():
            mapping = plan.label_maps.get(name)
            targets[name], masks[name] = encode_scalar(table, column, kind, mapping, problems)
        problems.raise_if_any()
        return InMemoryDataset({"features": x}, targets, masks)

    def _features(self, table: Table, columns: list[str], problems: Problems) -> torch.Tensor:
        idx = [table.index(c, "data.features") for c in columns]
        values = [
            [self._feature_cell(table, i, columns[k], row[j], problems) for k, j in enumerate(idx)]
            for i, row in enumerate(table.rows)
        ]
        return torch.tensor(values, dtype=torch.float32).reshape(len(table.rows), len(columns))

    def _feature_cell(self, table: Table, i: int, column: str, cell: str, problems: Problems) -> float:
        if is_missing(cell):
            if self.impute is None:
                problems.add(
                    Problem(
                        str(table.path),
                        f"{table.where(i)}, column {column!r}: missing feature value",
                        cell,
                        "a finite number",
                        "fill the cell, set data.impute=mean or zero, or leave the column out",
                    ),
                    group=(table.path, column, "missing"),
                )
            return math.nan
        value = to_float(cell)
        if value is None:
            problems.add(
                Problem(
                    str(table.path),
                    f"{table.where(i)}, column {column!r}: feature value is not a number",
                    cell,
                    "a finite number (features must be numeric)",
                    f"fix the cell, or leave the column out (data.exclude=[{column}])",
                ),
                group=(table.path, column, "nan"),
            )
            return math.nan
        return value

    def _carve(self, parts: dict[str, InMemoryDataset]) -> dict[str, InMemoryDataset]:
        """Splits without a file are carved from the train file by their fractions."""
        fv = 0.0 if "val" in parts else self.fractions["val"]
        ft = 0.0 if "test" in parts else self.fractions["test"]
        idx = split_indices(len(parts["train"]), fv, ft, self.split_seed)
        idx = {k: v.sort().values for k, v in idx.items()}  # each split keeps file order
        full = parts["train"]
        out = {s: parts[s] if s in parts else full.subset(idx[s]) for s in ("val", "test")}
        return {"train": full.subset(idx["train"]), **out}

    def _fill_missing(self, splits: dict[str, InMemoryDataset]) -> None:
        if self.impute is None:
            return
        train = splits["train"].inputs["features"]
        if self.impute == "mean":
            fill = torch.nanmean(train, dim=0).nan_to_num(0.0)  # all-missing column -> 0
        else:
            fill = torch.zeros(train.shape[1])
        for ds in splits.values():
            x = ds.inputs["features"]
            ds.inputs["features"] = torch.where(x.isnan(), fill, x)
        self.artifacts["impute"] = {"method": self.impute, "values": fill.tolist()}

    def _standardize(self, splits: dict[str, InMemoryDataset]) -> None:
        train = splits["train"].inputs["features"]
        mean = train.mean(dim=0)
        std = train.std(dim=0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        for ds in splits.values():
            ds.inputs["features"] = (ds.inputs["features"] - mean) / std
        self.artifacts["standardize"] = {"mean": mean.tolist(), "std": std.tolist()}

    # ---- prediction -------------------------------------------------------------------------

    predict_suffixes = (".csv", ".tsv", ".tab", ".parquet", ".pq")
    predict_accepts = "tables (CSV, TSV, Parquet) with the run's feature columns (other columns are ignored)"

    def prepare_inputs(self, files, artifacts, resize=None) -> PreparedInputs:
        """Rows of tables as training rows: the run's feature columns in the run's order, missing
        cells imputed and features standardised with the training split's statistics (those
        recorded in ``artifacts`` when there, else recomputed from the training files)."""
        columns = list(artifacts.get("features") or self.plan().features)
        fill, scale = self._statistics(artifacts)
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
            xs.append(self._features(table, columns, problems))
            problems.raise_if_any()
            names += [f"{f}:row {i + 1}" for i in range(len(table.rows))]
            stems += [f"{table.path.stem}_row{i + 1}" for i in range(len(table.rows))]
        x = torch.cat(xs)
        if fill is not None:
            x = torch.where(x.isnan(), torch.tensor(fill, dtype=x.dtype), x)
        if scale is not None:
            x = (x - torch.tensor(scale["mean"])) / torch.tensor(scale["std"])
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
