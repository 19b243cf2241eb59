"""The Pareto front of a set of points (:func:`pareto_front`), and the two primary task metrics a
set of runs is compared on (:func:`primary_pair`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .runs import ARROWS, Run
from .stats import _num


def _sign(direction: str) -> float:
    d = str(direction).lower()
    if d in ("higher", "max", "maximize", "up"):
        return 1.0
    if d in ("lower", "min", "minimize", "down"):
        return -1.0
    raise ValueError(f"unknown direction {direction!r}: use 'higher' or 'lower'")


def pareto_front(points: Sequence[Sequence[Any]], directions: Sequence[str]) -> list[int]:
    """Indices (ascending) of the points no other point dominates. ``directions[i]`` is "higher"
    or "lower" (better) for coordinate i. A point dominates another when it is at least as good
    in every coordinate and better in one: equal points do not dominate each other, so ties are
    all on the front. Points with a missing or non-finite coordinate are never on the front and
    dominate nothing."""
    signs = [_sign(d) for d in directions]
    pts: list[list[float] | None] = []
    for p in points:
        if len(p) != len(signs):
            raise ValueError(f"point {list(p)} has {len(p)} coordinates, directions {len(signs)}")
        xs = [_num(x) for x in p]
        pts.append(None if any(x is None for x in xs) else [s * x for s, x in zip(signs, xs)])

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [i for i, p in enumerate(pts) if p is not None and not any(q is not None and dominates(q, p) for q in pts)]


def primary_pair(runs: Sequence[Run]) -> list[tuple[str, str, str]] | None:
    """[(task, primary metric, direction)] x 2 when every run has exactly the same two primary
    tasks with a primary metric and its direction; else None."""
    pair = None
    for r in runs:
        prim = [t for t, i in r.tasks.items() if i.get("role", "primary") == "primary"]
        if len(prim) != 2:
            return None
        got = []
        for t in prim:
            m = r.tasks[t].get("primary_metric")
            d = r.direction(t, m) if m else None
            if not m or d not in ARROWS:
                return None
            got.append((t, m, d))
        if pair is None:
            pair = got
        elif sorted(pair) != sorted(got):
            return None
    return pair
