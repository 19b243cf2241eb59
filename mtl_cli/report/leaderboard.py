"""Aggregating over seeds into a leaderboard: the task metric columns (:func:`metric_columns`), and
one :class:`Row` per group with the mean and std over its runs of every column, Δm, time per step
and per epoch, peak memory and the objective, sorted best first (:func:`aggregate`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError, Problem
from .groups import Group
from .runs import ARROWS, Run
from .stats import Stat, mean_std

#: the columns besides task metrics: (key in Row.stats, title in tables)
EXTRA_COLUMNS = (
    ("time_per_step_s", "time/step s"),
    ("time_per_epoch_s", "time/epoch s"),
    ("peak_memory_mb", "peak MB"),
    ("objective", "objective"),
)
DELTA_M = "delta_m"


@dataclass(frozen=True)
class Column:
    """A task metric column: ``key`` is ``<task>/<metric>``."""

    task: str
    metric: str
    direction: str | None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"

    @property
    def title(self) -> str:
        return f"{self.key} {ARROWS[self.direction]}" if self.direction in ARROWS else self.key


def metric_columns(runs: Sequence[Run], which: str = "all") -> list[Column]:
    """The task metric columns, in the order of the runs' tasks and of each task's metrics:
    ``all`` = every metric of summary.json "test" but the loss; ``primary`` = each task's primary
    metric."""
    if which not in ("all", "primary"):
        raise ConfigError(
            [
                Problem(
                    "--metrics",
                    "unknown choice",
                    which,
                    allowed="all, primary",
                    fix="--metrics all (every test metric) or --metrics primary",
                )
            ]
        )
    cols: dict[tuple[str, str], Column] = {}
    for r in runs:
        for t in [*r.tasks, *[t for t in r.test if t not in r.tasks]]:
            info = r.tasks.get(t, {})
            if which == "primary":
                names = [info["primary_metric"]] if info.get("primary_metric") else []
            else:
                names = [*(info.get("directions") or {}), *r.test.get(t, {})]
            for m in names:
                if m == "loss" or (t, m) in cols:
                    continue
                if m not in r.test.get(t, {}) and which == "all":
                    continue
                cols[(t, m)] = Column(t, m, r.direction(t, m))
    return list(cols.values())


@dataclass
class Row:
    group: Group
    stats: dict[str, Stat]  # Column.key, "delta_m", "time_per_step_s", ... -> Stat
    memory_kinds: list[str]
    monitors: list[str]

    @property
    def n(self) -> int:
        return len(self.group.runs)


def _objective_sign(r: Run) -> float:
    return -1.0 if str(r.objective_direction).lower().startswith("min") else 1.0


def aggregate(groups: Sequence[Group], columns: Sequence[Column]) -> list[Row]:
    """One row per group: mean and std over its runs of every column, Δm, time per step, time per
    epoch, peak memory and the objective; sorted best first: by Δm where groups have it, then by
    the objective (its direction), baselines last."""
    rows = []
    for g in groups:
        stats = {c.key: mean_std(r.test.get(c.task, {}).get(c.metric) for r in g.runs) for c in columns}
        stats[DELTA_M] = mean_std(r.delta_m for r in g.runs)
        for key, _ in EXTRA_COLUMNS:
            stats[key] = mean_std(getattr(r, key) for r in g.runs)
        kinds = sorted({r.peak_memory_kind for r in g.runs if r.peak_memory_kind})
        monitors = sorted({str(r.objective_monitor) for r in g.runs if r.objective_monitor})
        rows.append(Row(g, stats, kinds, monitors))

    def order(row: Row):
        dm, obj = row.stats[DELTA_M].mean, row.stats["objective"].mean
        sign = _objective_sign(row.group.runs[0])
        return (row.group.kind == "stl", dm is None, -(dm or 0.0), obj is None, -sign * (obj or 0.0), row.group.label)

    return sorted(rows, key=order)
