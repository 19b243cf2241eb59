"""Escaping the cells of the tables the tools write, so that text from run directories and data
(class labels, override values, metric names, paths) is shown as text and cannot act as a
spreadsheet formula or as Markdown/HTML markup. Pure Python.

- :func:`csv_cell`: a CSV cell (header or value). A text cell that starts with ``=``, ``+``,
  ``-``, ``@``, a tab, a carriage return, a line feed or a NUL byte gets a leading ``'``, which
  spreadsheet programs take as "this is text" (OWASP's CSV injection guidance; ASVS adds NUL).
  A cell that is a plain number (``-1.5``, ``+1e-3``, ``-inf``, ``nan``: see :func:`is_number`)
  is left alone, and so are Python numbers and ``None``. Quotes, commas and line breaks inside a
  cell are the ``csv`` module's job (it quotes them).
- :func:`md_cell`: a Markdown table cell (header or body). Line breaks become a space, ``&``,
  ``<`` and ``>`` become HTML entities (no raw HTML, no autolinks) and ``|`` becomes ``\\|``, so
  every row keeps its columns; other text (``*``, ``_``, backticks, brackets) is left readable.
- :func:`md_code`: a Markdown code span (``\\`...\\```) that no backtick or line break inside
  the text can end early.
- :func:`one_line`: any line break replaced by a space (console tables).

Text without any of these characters comes back unchanged.
"""

from __future__ import annotations

import re
from typing import Any

#: first characters that make a spreadsheet read a cell as a formula (or a DDE call)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")

#: a plain decimal number, as Python's repr of a float or int writes it (and as people do),
#: or an infinity / NaN in the spellings float() reads
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)

#: line breaks as str.splitlines() knows them (\r\n first: one space for the pair)
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def is_number(text: str) -> bool:
    """True for a plain number: an optional sign, digits with an optional decimal point and
    exponent (``-1.5``, ``+1e-3``, ``.5``), or ``inf``/``infinity``/``nan`` with an optional sign
    (any case). No spaces, no thousands separators, no hex. A signed number cannot call anything
    in a spreadsheet (``-inf`` shows as ``#NAME?`` there but evaluates no function), and
    prefixing it would turn the number columns of CSV readers (pandas, the csv module + float)
    into text."""
    return _NUMBER.fullmatch(text) is not None


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV writer: numbers and None as they are (the csv module writes them as
    before); anything else as its text, with a leading ``'`` when it would start a formula."""
    if value is None or isinstance(value, (int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_START) and not is_number(text):
        return "'" + text
    return text


def one_line(text: str) -> str:
    """``text`` with every line break (``\\n``, ``\\r\\n``, ``\\r`` and the other breaks of
    str.splitlines) replaced by a space."""
    return _LINE_BREAK.sub(" ", text)


def md_cell(text: Any) -> str:
    """``text`` for a Markdown table cell: line breaks -> space, ``&`` ``<`` ``>`` -> ``&amp;``
    ``&lt;`` ``&gt;``, ``|`` -> ``\\|``."""
    s = one_line(str(text))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def md_code(text: Any) -> str:
    """``text`` as a Markdown code span: line breaks -> space, fenced by one more backtick than
    its longest run of backticks (with a space inside the fence when it starts or ends with a
    backtick, as CommonMark asks). HTML inside a code span is shown, not rendered."""
    s = one_line(str(text))
    runs = re.findall(r"`+", s)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"
