"""Numbers over seeds: a summary value as a finite float (:func:`_num`: None for missing, null,
NaN, inf or not a number), and the mean and sample standard deviation of such values
(:func:`mean_std`, a :class:`Stat`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def _num(x: Any) -> float | None:
    """A finite float, or None (missing, null, NaN, inf, or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) over the finite values; ``std`` is None for
    fewer than two values, ``mean`` None for none."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: Iterable[Any]) -> Stat:
    xs = [x for x in (_num(v) for v in values) if x is not None]
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    m = math.fsum(xs) / n
    if n == 1:
        return Stat(m, None, 1)
    return Stat(m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1)), n)
