"""Cells of tables as model data, shared by the sources that read tables (``csv``,
``image_manifest``; any reader that yields a :class:`Table` of text cells can use them).

- Missing cells (:func:`is_missing`) and numbers (:func:`to_float`), checked against the training
  dtype: a number that is finite in float64 but not in float32 (1e300) is refused, naming its
  cell; so is a regression target so large that its squared error overflows float32 (above
  :data:`REGRESSION_MAX`).
- Rows per split (:data:`SplitRows`): which rows of which table form train, val and test, so that
  every check below can name the split of a cell.
- Target kinds inferred from a column's values (:func:`infer_kind`): a column that mixes numbers
  and text is refused, naming the cells that are not numbers (with a hint for a decimal comma or a
  wrong delimiter), instead of becoming a classification target with one class per number.
- Targets: a task needs labels in the train split (:func:`check_labelled`); classes come from the
  train split (:func:`class_map`): a class seen only in val or test rows is refused (it would
  shift the indices of the others), so is a single class; binary targets likewise
  (:func:`check_binary`), unless ``data.classes`` declares the classes.
- Features (:class:`FeaturePlan`): numeric columns, and categorical columns one-hot encoded with
  the categories of the train split; statistics (imputation, standardisation) in float64.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError, Problem

log = logging.getLogger("mtl_cli")

MISSING = frozenset({"", "na", "n/a", "nan", "null"})
MAX_PROBLEMS = 10  # problems listed per error; the rest are counted
#: the largest finite float32: a number beyond it becomes inf in training
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: the largest regression target magnitude: its squared error, summed over a batch or a split of
#: up to 10^8 rows, still fits float32 (1e15² x 1e8 = 1e38 < 3.4e38)
REGRESSION_MAX = 1e15
#: categories a categorical feature column may have (one input per category)
MAX_CATEGORIES = 1000
#: val and test row numbers are listed in data.json up to this many rows (a hash always)
MAX_LISTED_ROWS = 100_000
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
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+\s*$")
_NON_FINITE = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


# ---- cells ------------------------------------------------------------------------------------
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


def number_hint(cell: str) -> str:
    """Why a cell that is not a number may have been meant as one ("" when no idea)."""
    text = cell.strip()
    if _DECIMAL_COMMA.match(text):
        return f"a decimal comma? write {text.replace('.', '').replace(',', '.')}"
    if text.lower() in _NON_FINITE:
        return "not a finite number"
    return ""


def float32_problem(value: float) -> str | None:
    """Why a finite float64 ``value`` cannot be used in float32 training, or None."""
    if abs(value) > FLOAT32_MAX:
        return f"too large for float32, the training dtype (beyond ±{FLOAT32_MAX:.3g} it becomes inf)"
    return None


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
    """A table read as text: header, rows of cells, and the file line of each row."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int | None] = field(default_factory=list)
    nominal: list[str] = field(default_factory=list)  # columns the file declares categorical (ARFF nominal)

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


def delimiter_hint(table: Table) -> str | None:
    """A header read as one column that holds another usual delimiter: the file's likely delimiter."""
    if len(table.header) != 1:
        return None
    return next((d for d in (";", "\t", "|", ",") if d in table.header[0]), None)


def missing_column(table: Table, column: str, key: str) -> Problem:
    """Problem: config ``key`` names a column that ``table`` does not have."""
    fix = f"correct {key} or the file's header (names are case-sensitive)"
    d = delimiter_hint(table)
    if d is not None:
        fix = (
            f"the header parsed as one column: the file looks {d!r}-separated, not "
            + ("comma-separated; " if d != "," else "tab-separated; ")
            + ("name it .tsv (tab-separated)" if d == "\t" else f"set data.delimiter='{d}'")
        )
    return Problem(
        key=str(table.path),
        message=f"column {column!r} (from {key}) is not in the header",
        value=column,
        allowed="columns " + ", ".join(repr(c) for c in table.header),
        fix=fix,
    )


# ---- rows per split ----------------------------------------------------------------------------
#: split -> the (table, row indices) it is made of: a table of its own, or rows of another
SplitRows = dict[str, list[tuple[Table, list[int]]]]


def cells(rows: SplitRows, column: str, key: str, splits: Iterable[str] | None = None) -> Iterator[tuple]:
    """``(split, table, row index, cell)`` of ``column`` over the given splits (default all)."""
    for split in splits or rows:
        for table, idx in rows.get(split, []):
            j = table.index(column, key)
            for i in idx:
                yield split, table, i, table.rows[i][j]


def split_record(rows: SplitRows, how: dict) -> dict:
    """What data.json records of the splits, so that others can rebuild and check them: ``how``
    (e.g. seed and fractions), ``files`` (each file read, with its sha256), and per split its
    file, its number of rows, the sha256 of its 1-based data row numbers (comma-joined, in file
    order) and, for val and test rows carved from a larger file, the row numbers themselves (up
    to :data:`MAX_LISTED_ROWS`)."""
    out: dict = dict(how)
    files: dict[str, str] = {}
    for split, parts in rows.items():
        entry = []
        for table, idx in parts:
            if str(table.path) not in files:
                files[str(table.path)] = _file_sha256(table.path)
            numbers = [i + 1 for i in idx]
            item: dict = {
                "file": str(table.path),
                "rows": len(numbers),
                "rows_sha256": hashlib.sha256(",".join(map(str, numbers)).encode()).hexdigest(),
            }
            if split != "train" and len(idx) < len(table.rows) and len(numbers) <= MAX_LISTED_ROWS:
                item["row_numbers"] = numbers
            entry.append(item)
        out[split] = entry[0] if len(entry) == 1 else entry
    out["files"] = files
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


# ---- target kinds ----------------------------------------------------------------------------
def infer_kind(rows: SplitRows, column: str, name: str) -> str:
    """``regression`` when every labelled cell is a number, ``classification`` when most are not.

    A column of numbers with some cells that are not (one stray text, ``inf`` or decimal-comma
    cell) is refused: it would otherwise become a classifier with one class per number. The error
    names those cells (at most 10, with a hint for a decimal comma), says that the column looks
    numeric and asks for ``data.kinds``. A column mostly of text is classification (a few labels
    may be numbers: "+1", "42")."""
    numbers, texts = 0, []
    for split, table, i, cell in cells(rows, column, "data.targets"):
        if is_missing(cell):
            continue
        if to_float(cell) is None:
            texts.append((split, table, i, cell))
        else:
            numbers += 1
    if not texts:
        return "regression"
    if numbers < len(texts):
        return "classification"
    total = numbers + len(texts)
    problems = Problems()
    for split, table, i, cell in texts:
        hint = number_hint(cell)
        problems.add(
            Problem(
                str(table.path),
                f"{table.where(i)}, column {column!r} ({split} split): "
                + ("not a number" + (f" ({hint})" if hint else ""))
                + f", in a column that looks numeric ({numbers} of its {total} labels are numbers)",
                cell,
                "numbers (a regression target), or class labels if the kind is declared",
                "fix the cell (an empty cell is a missing label) and set "
                f"++data.kinds.{name}=regression; if the column holds class labels, set "
                f"++data.kinds.{name}=classification (every distinct value is then a class)",
            )
        )
    problems.raise_if_any()
    return "classification"  # pragma: no cover - raise_if_any raised


# ---- target labels ----------------------------------------------------------------------------
def ordered_labels(labels: Iterable[str]) -> list[str]:
    """Labels sorted numerically when all are numbers (so "2" < "10"), else as strings."""
    labels = set(labels)
    if all(to_float(v) is not None for v in labels):
        return sorted(labels, key=lambda v: (to_float(v), v))
    return sorted(labels)


def label_map(values: list[str]) -> dict[str, int]:
    """Sorted label -> index mapping of the non-missing values (see :func:`ordered_labels`)."""
    return {label: i for i, label in enumerate(ordered_labels(v.strip() for v in values if not is_missing(v)))}


def check_labelled(rows: SplitRows, column: str, name: str) -> None:
    """A target needs labels in the train split: a task on an empty column would train on nothing
    (its loss 0 at every step) and report nothing."""
    counts = {split: [0, 0] for split in rows}  # split -> [labelled, rows]
    for split, _, _, cell in cells(rows, column, "data.targets"):
        counts[split][1] += 1
        counts[split][0] += not is_missing(cell)
    if counts.get("train", [0, 0])[0]:
        return
    table = rows["train"][0][0]
    anywhere = sum(c[0] for c in counts.values())
    where = (
        f"every cell of the column is empty (or NA) in every split ({sum(c[1] for c in counts.values())} rows)"
        if not anywhere
        else f"no train row has a label ({counts['train'][1]} rows, all empty or NA; labelled rows: "
        + ", ".join(f"{s} {c[0]}" for s, c in counts.items() if s != "train")
        + ")"
    )
    raise DataError(
        [
            Problem(
                str(table.path),
                f"column {column!r} (target {name!r}): {where}",
                allowed="a target with labels in the train split",
                fix=f"fill in the labels, point data.targets.{name} at the right column, or remove the "
                f"target from data.targets (and its task)",
            )
        ]
    )


def class_map(rows: SplitRows, column: str, name: str, declared: list[str] | None) -> dict[str, int]:
    """Class label -> index for a classification target: the declared classes in their order (a
    label outside them is refused), else the labels of the train split, sorted. A label that only
    val or test rows have is refused (naming the row and split): it would become an extra class
    and shift the indices of the others. Fewer than two classes are refused."""
    problems = Problems()
    if declared is not None:
        for _, table, i, cell in cells(rows, column, "data.targets"):
            if not is_missing(cell) and cell.strip() not in declared:
                problems.add(
                    Problem(
                        str(table.path),
                        f"{table.where(i)}, column {column!r}: label not among the declared classes",
                        cell,
                        ", ".join(declared),
                        f"correct the label or add it to data.classes.{name}",
                    )
                )
        problems.raise_if_any()
        labels = list(declared)
    else:
        seen: dict[str, int] = {}
        for _, _, _, cell in cells(rows, column, "data.targets", ["train"]):
            if not is_missing(cell):
                seen[cell.strip()] = seen.get(cell.strip(), 0) + 1
        labels = ordered_labels(seen)
        for split, table, i, cell in cells(rows, column, "data.targets", [s for s in rows if s != "train"]):
            label = cell.strip()
            if not is_missing(cell) and label not in seen:
                problems.add(
                    Problem(
                        str(table.path),
                        f"{table.where(i)}, column {column!r}: class {label!r} is in the {split} split "
                        "but in no train row (it would become an extra class, shifting the indices of the others)",
                        cell,
                        "the train split's classes: " + ", ".join(labels),
                        f"declare every class in data.classes.{name}, e.g. {_classes_example(name, [*labels, label])} "
                        "(the model then has an output for it, trained on no row), move such rows into the "
                        "train split, or remove them",
                    ),
                    group=(table.path, column, split, label),
                )
        problems.raise_if_any()
        if len(labels) == 1:
            table = rows["train"][0][0]
            raise DataError(
                [
                    Problem(
                        str(table.path),
                        f"column {column!r} (target {name!r}): every labelled train row has the class "
                        f"{labels[0]!r} ({seen[labels[0]]} rows); a classifier needs at least two classes",
                        labels[0],
                        "two or more classes in the train split",
                        "add rows of the other classes, declare the classes (two or more), e.g. "
                        f"{_classes_example(name, [labels[0], '<other>'])}, or remove the target",
                    )
                ]
            )
    if len(labels) < 2:
        raise DataError(
            [
                Problem(
                    f"data.classes.{name}",
                    "a classification target needs at least two classes",
                    labels,
                    "two or more class names",
                    f"list every class in data.classes.{name}",
                )
            ]
        )
    return {label: i for i, label in enumerate(labels)}


def _classes_example(name: str, labels: list[str]) -> str:
    """A command-line override declaring ``labels`` (shortened past 8)."""
    shown = labels if len(labels) <= 8 else [*labels[:7], "..."]
    return f"++data.classes.{name}=[{','.join(shown)}]"


def check_binary(rows: SplitRows, column: str, name: str, declared: list[str] | None) -> None:
    """A binary target needs both values (0 and 1) in the train split: a value that only val or
    test rows have is refused, naming the row and split, and so is a train split of one value,
    unless ``declared`` (``data.classes.<name>``: two labels, the 0 and the 1 in any accepted
    spelling) says both classes exist. Cells that are not binary values are left to
    :func:`encode_scalar`."""
    if declared is not None:
        values = [BINARY_VALUES.get(str(v).strip().lower()) for v in declared]
        if sorted(v for v in values if v is not None) != [0.0, 1.0] or len(values) != 2:
            table = rows["train"][0][0]
            raise DataError(
                [
                    Problem(
                        f"data.classes.{name}",
                        f"a binary target's classes are its two values (column {column!r} of {table.path})",
                        declared,
                        "two labels: a 0 (0, false, no) and a 1 (1, true, yes)",
                        f"set ++data.classes.{name}=[0,1] (or [no,yes]), or leave it out",
                    )
                ]
            )
        return
    seen: dict[float, int] = {}
    for _, _, _, cell in cells(rows, column, "data.targets"):
        if not is_missing(cell) and cell.strip().lower() not in BINARY_VALUES:
            return  # a cell that is not binary: encode_scalar names it first
    for _, _, _, cell in cells(rows, column, "data.targets", ["train"]):
        v = BINARY_VALUES.get(cell.strip().lower())
        if v is not None:
            seen[v] = seen.get(v, 0) + 1
    if len(seen) != 1:
        return  # both values
    (only,) = seen
    problems = Problems()
    for split, table, i, cell in cells(rows, column, "data.targets", [s for s in rows if s != "train"]):
        v = BINARY_VALUES.get(cell.strip().lower())
        if v is not None and v != only:
            problems.add(
                Problem(
                    str(table.path),
                    f"{table.where(i)}, column {column!r}: the value {int(v)} is in the {split} split but "
                    f"in no train row (every labelled train row is {int(only)})",
                    cell,
                    f"train rows of both values (0 and 1) for target {name!r}",
                    f"move rows of both values into the train split, or declare ++data.classes.{name}=[0,1] "
                    "to train on one value anyway",
                ),
                group=(table.path, column, split),
            )
    problems.raise_if_any()
    table = rows["train"][0][0]
    raise DataError(
        [
            Problem(
                str(table.path),
                f"column {column!r} (binary target {name!r}): every labelled train row is {int(only)} "
                f"({seen[only]} rows); the model would learn a constant, and AUROC is undefined",
                int(only),
                "train rows of both values (0 and 1)",
                f"add rows of the other value, declare ++data.classes.{name}=[0,1] to train anyway, or "
                "remove the target",
            )
        ]
    )


def encode_scalar(
    table: Table, column: str, kind: str, mapping: dict[str, int] | None, problems: Problems
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target values and masks of one column for a scalar kind; bad cells go to ``problems``.
    Regression values are checked in the training dtype: beyond :data:`REGRESSION_MAX` (their
    squared error would overflow float32) a cell is refused, naming it."""
    cells_ = table.column(column, "targets")
    mask = torch.tensor([not is_missing(c) for c in cells_], dtype=torch.bool)
    out = []
    for i, cell in enumerate(cells_):
        value = 0.0 if is_missing(cell) else _scalar(cell.strip(), kind, mapping)
        if value is None:
            problems.add(_bad_target(table, i, column, cell, kind, mapping), group=(table.path, column))
            value = 0.0
        elif kind == "regression" and abs(value) > REGRESSION_MAX:
            problems.add(
                Problem(
                    str(table.path),
                    f"{table.where(i)}, column {column!r}: regression target too large for float32 training "
                    "(its squared error, the MSE loss and R², would overflow to inf)",
                    cell,
                    f"numbers within ±{REGRESSION_MAX:g}",
                    "rescale the column (e.g. to thousands or millions of its unit, or its logarithm)",
                ),
                group=(table.path, column, "large"),
            )
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
    hint = number_hint(cell) if kind == "regression" else ""
    return Problem(
        str(table.path),
        f"{table.where(i)}, column {column!r}: not a valid {kind} label" + (f" ({hint})" if hint else ""),
        cell,
        allowed,
        fix,
    )


def warn_constant(name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
    """A regression target with one value over the train split: trains, but R² is undefined."""
    present = values[mask]
    if present.numel() > 1 and bool((present == present[0]).all()):
        log.warning(
            "target %r has the same value (%g) in every labelled train row: the model learns a constant "
            "and R² is undefined (reported as n/a)",
            name,
            float(present[0]),
        )


# ---- features -------------------------------------------------------------------------------
@dataclass
class FeaturePlan:
    """Feature columns in input order; ``categories``: the categorical ones, each with its
    categories (one input per category, in this order)."""

    columns: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """One name per model input: the column, or ``column=category`` for one-hot inputs."""
        out: list[str] = []
        for c in self.columns:
            out += [f"{c}={v}" for v in self.categories[c]] if c in self.categories else [c]
        return out

    @property
    def width(self) -> int:
        return sum(len(self.categories[c]) if c in self.categories else 1 for c in self.columns)

    def one_hot(self) -> torch.Tensor:
        """bool [width]: which inputs are one-hot (left out of standardisation)."""
        flags: list[bool] = []
        for c in self.columns:
            flags += [True] * len(self.categories[c]) if c in self.categories else [False]
        return torch.tensor(flags, dtype=torch.bool)


def plan_categories(rows: SplitRows, columns: Iterable[str]) -> dict[str, list[str]]:
    """The categories of each categorical column: its distinct values in the train split (sorted
    as :func:`ordered_labels`); more than :data:`MAX_CATEGORIES`, or none, is refused."""
    out, problems = {}, Problems()
    for column in columns:
        seen = {c.strip() for _, _, _, c in cells(rows, column, "data.categorical", ["train"]) if not is_missing(c)}
        table = rows["train"][0][0]
        if not seen:
            problems.add(
                Problem(
                    str(table.path),
                    f"categorical column {column!r} has no value in the train split",
                    column,
                    fix=f"leave the column out (data.exclude=[{column}]) or fill it",
                )
            )
        elif len(seen) > MAX_CATEGORIES:
            problems.add(
                Problem(
                    str(table.path),
                    f"categorical column {column!r} has {len(seen)} categories in the train split "
                    "(an identifier or free text?)",
                    column,
                    f"at most {MAX_CATEGORIES} categories (one model input each)",
                    f"leave the column out (data.exclude=[{column}]), or group rare values into one",
                )
            )
        out[column] = ordered_labels(seen)
    problems.raise_if_any()
    return out


class FeatureEncoder:
    """Encodes the feature cells of tables with a :class:`FeaturePlan`: numbers as they are (NaN
    where missing), categorical cells one-hot (all NaN where missing, so imputation fills them:
    ``mean`` with the train split's category frequencies, ``zero`` with zeros). A category the
    train split lacks encodes as all zeros (no category), counted per column and logged once
    per call of :meth:`log_unseen`. Bad cells go to ``problems``, named by file, row and column."""

    def __init__(self, plan: FeaturePlan, impute: str | None):
        self.plan = plan
        self.impute = impute
        self.index = {c: {v: k for k, v in enumerate(cats)} for c, cats in plan.categories.items()}
        self.unseen: dict[str, dict[str, int]] = {}

    def encode(self, table: Table, rows: Iterable[int], problems: Problems) -> torch.Tensor:
        idx = [table.index(c, "data.features") for c in self.plan.columns]
        out = []
        for i in rows:
            row = table.rows[i]
            values: list[float] = []
            for c, j in zip(self.plan.columns, idx):
                values += self._cell(table, i, c, row[j], problems)
            out.append(values)
        return torch.tensor(out, dtype=torch.float32).reshape(len(out), self.plan.width)

    def _cell(self, table: Table, i: int, column: str, cell: str, problems: Problems) -> list[float]:
        cats = self.index.get(column)
        if is_missing(cell):
            if self.impute is None:
                problems.add(
                    Problem(
                        str(table.path),
                        f"{table.where(i)}, column {column!r}: missing feature value",
                        cell,
                        "a category of the column" if cats is not None else "a finite number",
                        "fill the cell, set data.impute=mean or zero, or leave the column out",
                    ),
                    group=(table.path, column, "missing"),
                )
            return [math.nan] * (len(cats) if cats is not None else 1)
        if cats is not None:
            hot = [0.0] * len(cats)
            k = cats.get(cell.strip())
            if k is None:
                seen = self.unseen.setdefault(column, {})
                seen[cell.strip()] = seen.get(cell.strip(), 0) + 1
            else:
                hot[k] = 1.0
            return hot
        value = to_float(cell)
        why = float32_problem(value) if value is not None else None
        if value is None or why:
            hint = number_hint(cell)
            problems.add(
                Problem(
                    str(table.path),
                    f"{table.where(i)}, column {column!r}: "
                    + (why or "feature value is not a number" + (f" ({hint})" if hint else "")),
                    cell,
                    "a finite number (features must be numeric) in float32's range",
                    f"fix the cell, declare the column categorical (one-hot: ++data.categorical=[{column}]), "
                    f"or leave the column out (data.exclude=[{column}])",
                ),
                group=(table.path, column, "nan"),
            )
            return [math.nan]
        return [value]

    def log_unseen(self, where: str) -> None:
        """One warning per column with categories that the train split lacks (encoded as zeros)."""
        for column, values in self.unseen.items():
            shown = ", ".join(f"{v!r} ({n} rows)" for v, n in list(values.items())[:5])
            more = f" and {len(values) - 5} more" if len(values) > 5 else ""
            log.warning(
                "%s: categorical column %r has categories the train split lacks, encoded as all zeros "
                "(no category): %s%s",
                where,
                column,
                shown,
                more,
            )
        self.unseen = {}


def fill_values(train: torch.Tensor, method: str) -> torch.Tensor:
    """Per input, the imputation value: the train split's mean (float64; 0 for an all-missing
    column) or zero."""
    if method == "mean":
        return torch.nanmean(train.double(), dim=0).nan_to_num(0.0).float()
    return torch.zeros(train.shape[1])


def standardize_statistics(train: torch.Tensor, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each input over the train split, computed in float64 (so
    that squares of large values do not overflow); one-hot inputs and constant columns keep
    std 1 (one-hot ones mean 0 too: they stay 0/1)."""
    x = train.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    mean = torch.where(one_hot, torch.zeros_like(mean), mean)
    std = torch.where(one_hot, torch.ones_like(std), std)
    return mean, std


def apply_standardize(
    x: torch.Tensor, mean: list[float] | torch.Tensor, std: list[float] | torch.Tensor
) -> torch.Tensor:
    """``(x - mean) / std`` in float64, returned as float32."""
    m = torch.as_tensor(mean, dtype=torch.float64)
    s = torch.as_tensor(std, dtype=torch.float64)
    return ((x.double() - m) / s).float()


def warn_large_features(x: torch.Tensor, names: list[str], where: str) -> None:
    """Unstandardised features beyond ±1e15: the model's float32 activations may overflow."""
    if x.numel() == 0:
        return
    top = x.abs().nan_to_num(0.0).amax(dim=0)
    big = [(names[j], float(top[j])) for j in range(len(names)) if float(top[j]) > REGRESSION_MAX]
    if big:
        log.warning(
            "%s: feature column(s) %s hold values beyond ±%g and data.standardize is false: the model's "
            "float32 activations may overflow; set data.standardize=true",
            where,
            ", ".join(f"{n!r} (up to {v:.3g})" for n, v in big[:5]),
            REGRESSION_MAX,
        )
