"""Writing the leaderboard as tables: ``mean ± std`` cells (:func:`fmt_stat`), the console text
(:func:`to_text`), Markdown (:func:`to_markdown`) and CSV at full precision (:func:`to_csv`). The
text and Markdown tables end with the leaderboard's caveats (:func:`~.leaderboard.caveats`):
repeated seeds, and rows of several experiments."""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from ..results.cells import csv_cell, md_cell, one_line
from .groups import Group
from .leaderboard import DELTA_M, EXTRA_COLUMNS, Column, Row, caveats
from .stats import Stat


def _sig(x: float, digits: int = 4) -> str:
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if e >= 6 or e < -4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(0, digits - 1 - e)}f}"


def fmt_stat(s: Stat) -> str:
    """``mean ± std`` rounded to the std's second significant digit; the mean alone (4
    significant digits) for one run; empty for none."""
    if s.mean is None:
        return ""
    if s.std is None:
        return _sig(s.mean)
    if s.std == 0:
        return f"{_sig(s.mean)} ± 0"
    d = max(0, min(8, 1 - math.floor(math.log10(s.std))))
    return f"{s.mean:.{d}f} ± {s.std:.{d}f}"


def _seeds_text(g: Group) -> str:
    """The group's seeds, each once; ``0×2``: seed 0 ran twice (its runs are averaged)."""
    return ",".join(s + (f"×{k}" if k > 1 else "") for s, k in g.seed_counts())


def table_cells(rows: Sequence[Row], columns: Sequence[Column]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the leaderboard (text and Markdown)."""
    head = ["#", "group", "n", "seeds", "Δm % ↑", *[c.title for c in columns], *[t for _, t in EXTRA_COLUMNS]]
    body = []
    for i, row in enumerate(rows, 1):
        body.append(
            [
                str(i),
                row.group.label,
                str(row.n),
                _seeds_text(row.group),
                fmt_stat(row.stats[DELTA_M]),
                *[fmt_stat(row.stats[c.key]) for c in columns],
                *[fmt_stat(row.stats[k]) for k, _ in EXTRA_COLUMNS],
            ]
        )
    return head, body


#: columns repeated in every block of a wrapped console table (#, group)
KEY_COLUMNS = 2


def to_text(rows: Sequence[Row], columns: Sequence[Column], width: int | None = None) -> str:
    """The console table; a line break inside a cell is shown as a space. Wider than ``width``
    characters (None: never), its columns are wrapped into blocks of at most that width, one after
    the other, each repeating the ``#`` and ``group`` columns (as report.md, report.csv has them all
    in one row)."""
    head, body = table_cells(rows, columns)
    head, body = [one_line(c) for c in head], [[one_line(c) for c in r] for r in body]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    blocks: list[list[int]] = [list(range(len(head)))]
    if width is not None and sum(widths) + 2 * (len(widths) - 1) > width:
        key = list(range(min(KEY_COLUMNS, len(head))))
        blocks, block = [], list(key)
        for i in range(len(key), len(head)):
            if len(block) > len(key) and sum(widths[j] + 2 for j in block) + widths[i] > width:
                blocks.append(block)
                block = list(key)
            block.append(i)
        blocks.append(block)
    out = []
    for block in blocks:
        lines = []
        for r in [head, *body]:
            cells = [r[i].ljust(widths[i]) if i == 1 else r[i].rjust(widths[i]) for i in block]
            lines.append("  ".join(cells).rstrip())
        out.append("\n".join(lines))
    notes = [
        textwrap.fill(f"note: {n}", width, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)
        if width
        else f"note: {n}"
        for n in caveats(rows)
    ]
    return "\n\n".join(out) + "".join(f"\n\n{n}" for n in notes)


def to_markdown(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured Markdown table; every cell escaped by :func:`~mtl_cli.results.cells.md_cell`
    (no line break, raw HTML or unescaped ``|`` gets through), so each row has the header's columns."""
    head, body = table_cells(rows, columns)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(md_cell(c) for c in cells) + " |"

    align = ["---:", ":---", "---:", "---:", *["---:"] * (len(head) - 4)]
    table = "\n".join([line(head), "|" + "|".join(align) + "|", *[line(r) for r in body]])
    return table + "".join(f"\n\nNote: {md_cell(n)}" for n in caveats(rows))


def csv_header(rows: Sequence[Row], columns: Sequence[Column]) -> list[str]:
    fields = list(dict.fromkeys(k for row in rows for k in row.group.fields))
    stats = [DELTA_M, *[c.key for c in columns], *[k for k, _ in EXTRA_COLUMNS]]
    return [
        "rank",
        "group",
        "kind",
        *fields,
        "n",
        "seeds",
        *[f"{k}_{s}" for k in stats for s in ("mean", "std", "n")],
        "peak_memory_kind",
        "objective_monitor",
        "run_dirs",
        "experiment",
    ]


def to_csv(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """The leaderboard with one column per statistic (``<key>_mean``, ``_std``, ``_n``) at full
    precision (Python's shortest round-trip float text); empty cells for missing values. Text cells
    (header too) that a spreadsheet would take as a formula get a leading ``'``
    (:func:`~mtl_cli.results.cells.csv_cell`); numbers are written as they are."""
    header = csv_header(rows, columns)
    fields = header[3 : header.index("n")]
    stats = [DELTA_M, *[c.key for c in columns], *[k for k, _ in EXTRA_COLUMNS]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in header])
    for i, row in enumerate(rows, 1):
        g = row.group
        cells: list[Any] = [i, g.label, g.kind, *[g.fields.get(f, "") for f in fields], row.n, _seeds_text(g)]
        for k in stats:
            s = row.stats[k]
            cells += [repr(s.mean) if s.mean is not None else "", repr(s.std) if s.std is not None else "", s.n]
        cells += [";".join(row.memory_kinds), ";".join(row.monitors), ";".join(str(r.path) for r in g.runs)]
        cells.append(row.experiment)
        w.writerow([csv_cell(c) for c in cells])
    return buf.getvalue()
