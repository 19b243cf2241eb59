"""Training curves: a run's metrics.jsonl records (:func:`read_records`), one metric of one split
against the step or epoch (:func:`series`), and the mean and std over seeds (:func:`mean_curve`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from .stats import _num, mean_std


def read_records(path: Path) -> list[dict]:
    """metrics.jsonl's records; a cut or unreadable line is left out."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def series(records: Iterable[dict], split: str, key: str, x: str) -> dict[float, float]:
    """{x: value} of the ``split`` records that have a finite ``key`` (the last one wins)."""
    out = {}
    for rec in records:
        if rec.get("split") == split:
            xv, yv = _num(rec.get(x)), _num(rec.get(key))
            if xv is not None and yv is not None:
                out[xv] = yv
    return out


def mean_curve(curves: Sequence[dict[float, float]]) -> tuple[list[float], list[float], list[float | None]]:
    """Mean and std over curves, at every x any of them has (over the curves that have it)."""
    xs = sorted({x for c in curves for x in c})
    means, stds = [], []
    for x in xs:
        s = mean_std(c[x] for c in curves if x in c)
        means.append(s.mean)
        stds.append(s.std)
    return xs, means, stds
