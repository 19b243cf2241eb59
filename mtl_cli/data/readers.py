"""Readers of table formats other than CSV, each giving a :class:`~mtl_cli.data.tabular.Table` of
text cells, so that every rule of the table sources (missing cells, kinds, classes, one-hot
features, splits, the errors naming file, row and column) applies to them unchanged.

- ARFF (Weka, Mulan, MEKA) through :func:`scipy.io.arff.loadarff`: numeric attributes become
  numbers written so that they read back exactly (``repr`` of the float), nominal attributes their
  value's text; a missing value (``?``) becomes an empty cell, i.e. a missing feature or a missing
  label. The nominal attributes are listed in ``Table.nominal``: the table sources one-hot encode
  them as features. Date attributes become their text (as a feature, a date is refused as not a
  number: leave it out with ``data.exclude``). String and relational attributes and sparse ARFF
  are refused by scipy: the error names the file.
- MATLAB ``.mat`` (v4 to v7.2) through :func:`scipy.io.loadmat` (:func:`read_mat`): every 2-D
  numeric variable whose rows or columns number N, the largest dimension of the file's
  variables, gives one column per vector of length N (``x`` of shape 28 x N: ``x1`` .. ``x28``; a
  single vector keeps its variable's name). Other variables (start indices, per-task counts) are
  left out; :func:`mat_variables` returns every array, for sources that know a file's layout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import DataError, Problem
from .tabular import Table


def _refused(path: Path, what: str, fix: str) -> DataError:
    return DataError([Problem(str(path), what, fix=fix)])


def number_cell(value: Any) -> str:
    """A number as a cell: '' for NaN (missing), integers without a fraction, floats by repr."""
    v = float(value)
    if math.isnan(v):
        return ""
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def read_arff(path: Path) -> Table:
    """An ARFF file as a Table (see the module docstring)."""
    from scipy.io import arff

    try:
        data, meta = arff.loadarff(str(path))
    except (arff.ArffError, NotImplementedError, ValueError, IndexError) as e:
        raise _refused(
            path,
            f"cannot be read as ARFF: {e}",
            "check the file's @attribute lines and @data rows (numeric and nominal attributes only, no sparse rows)",
        ) from e
    except UnicodeDecodeError as e:
        raise _refused(path, f"not UTF-8 text ({e.reason} at byte {e.start})", "save the file as UTF-8") from e
    names = [_unquote(n) for n in meta.names()]
    kinds = meta.types()
    columns = []
    for name, kind in zip(meta.names(), kinds):
        values = data[name]
        if kind == "nominal":
            columns.append(
                ["" if v in (b"?", "?") else (v.decode() if isinstance(v, bytes) else str(v)) for v in values]
            )
        elif kind == "numeric":
            columns.append([number_cell(v) for v in values])
        else:  # dates, as text (NaT: missing): a date feature is refused as not a number, naming its column
            columns.append(["" if str(v) == "NaT" else str(v) for v in values])
    rows = [list(r) for r in zip(*columns)] if columns else []
    return Table(path, names, rows, nominal=[n for n, k in zip(names, kinds) if k == "nominal"])


def _unquote(name: str) -> str:
    """An attribute name without the quotes some writers leave in it (``"'dtd'"`` -> ``dtd``)."""
    text = name.strip()
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def mat_variables(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB file (numpy arrays), without scipy's ``__header__`` entries."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        raw = loadmat(str(path))
    except NotImplementedError as e:  # v7.3 files are HDF5
        raise _refused(
            path, f"cannot be read: {e}", "save it in MATLAB with save(..., '-v7') (v7.3 files are HDF5)"
        ) from e
    except (MatReadError, ValueError, TypeError, OSError) as e:
        raise _refused(path, f"cannot be read as a MATLAB .mat file: {e}", "check that the file is a .mat file") from e
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def numeric_matrix(value: Any) -> bool:
    """True for a 2-D array of numbers (bool, integer or float)."""
    return getattr(value, "ndim", 0) == 2 and getattr(value, "dtype", None) is not None and value.dtype.kind in "biuf"


def mat_columns(name: str, value: Any, n: int) -> dict[str, list[str]]:
    """The columns of one variable as cells, for a table of ``n`` rows ({} when no dimension is ``n``)."""
    if value.shape[0] != n:
        if value.shape[1] != n:
            return {}
        value = value.T
    if value.shape[1] == 1:
        return {name: [number_cell(v) for v in value[:, 0]]}
    return {f"{name}{j + 1}": [number_cell(v) for v in value[:, j]] for j in range(value.shape[1])}


def read_mat(path: Path) -> Table:
    """A MATLAB file as a Table (see the module docstring)."""
    variables = {k: v for k, v in mat_variables(path).items() if numeric_matrix(v) and v.size}
    if not variables:
        raise _refused(
            path,
            "holds no 2-D numeric variable to read as columns",
            "save the data as numeric matrices (one row or column per sample)",
        )
    n = max(max(v.shape) for v in variables.values())
    columns: dict[str, list[str]] = {}
    for name, value in variables.items():
        columns.update(mat_columns(name, value, n))
    return table_of(path, columns)


def table_of(path: Path, columns: dict[str, list[str]]) -> Table:
    """A Table of ``columns`` (name -> cells, all of one length) read from ``path``."""
    header = list(columns)
    return Table(path, header, [list(r) for r in zip(*columns.values())])
