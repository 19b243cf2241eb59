"""Aggregating over seeds into a leaderboard: the task metric columns (:func:`metric_columns`), and
one :class:`Row` per group with the mean and std over its seeds of every column, Δm, time per step
and per epoch, peak memory and the objective, sorted best first (:func:`aggregate`).

Statistics are over distinct seeds: runs that repeat a seed (the same run twice) are averaged into
one value first, as their spread is not seed variance (``n`` counts seeds). Δm compares a run with
its own single-task baselines, so Δm of different experiments (other primary tasks or other data,
:func:`experiment_key`) do not compare: rows are ranked within each experiment, and
:func:`caveats` says so (and names repeated seeds) under the tables."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    experiment: str = ""  # E1, E2, ... where the rows come from several experiments
    units: list[list[Run]] = field(default_factory=list)  # the runs of each seed

    @property
    def n(self) -> int:
        """Distinct seeds (a run without a recorded seed counts as one)."""
        return len(self.units) if self.units else len(self.group.runs)


def seed_units(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs grouped by seed, in order of first appearance; a run without a recorded seed is a
    unit of its own (nothing says it repeats another)."""
    units: dict[Any, list[Run]] = {}
    for i, r in enumerate(runs):
        key = ("seed", json.dumps(r.seed, sort_keys=True, default=str)) if r.seed is not None else ("run", i)
        units.setdefault(key, []).append(r)
    return list(units.values())


def _per_seed(units: list[list[Run]], get: Callable[[Run], Any]) -> list[float | None]:
    """One value per seed: the mean of its runs' finite values (None when none has one)."""
    out: list[float | None] = []
    for unit in units:
        xs = [x for x in (_finite(get(r)) for r in unit) if x is not None]
        out.append(math.fsum(xs) / len(xs) if xs else None)
    return out


def _metric(c: Column) -> Callable[[Run], Any]:
    return lambda r: r.test.get(c.task, {}).get(c.metric)


def _attribute(key: str) -> Callable[[Run], Any]:
    return lambda r: getattr(r, key)


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def experiment_key(r: Run) -> str:
    """What Δm is relative to: the primary tasks (with their primary metric) and the data
    (``data`` and ``datasets`` of config.yaml). Runs of one key share their baselines' setting."""
    primary = sorted(
        (t, str(i.get("primary_metric"))) for t, i in r.tasks.items() if (i.get("role") or "primary") == "primary"
    )
    data = {k: r.config.get(k) for k in ("data", "datasets") if r.config.get(k)} if isinstance(r.config, dict) else {}
    return json.dumps([primary, data], sort_keys=True, default=str)


def _experiment_text(r: Run) -> str:
    tasks = ", ".join(t for t, i in r.tasks.items() if (i.get("role") or "primary") == "primary")
    data = r.config.get("data") if isinstance(r.config, dict) else None
    where = ""
    if isinstance(data, dict):
        where = " on data " + " ".join(
            str(data[k]) for k in ("name", "path", "root") if isinstance(data.get(k), (str, int, float))
        )
    return f"tasks {tasks}{where}"


def _objective_sign(r: Run) -> float:
    return -1.0 if str(r.objective_direction).lower().startswith("min") else 1.0


def aggregate(groups: Sequence[Group], columns: Sequence[Column]) -> list[Row]:
    """One row per group: mean and std over its runs of every column, Δm, time per step, time per
    epoch, peak memory and the objective; sorted best first: by Δm where groups have it, then by
    the objective (its direction), baselines last."""
    rows = []
    for g in groups:
        units = seed_units(g.runs)
        stats = {c.key: mean_std(_per_seed(units, _metric(c))) for c in columns}
        stats[DELTA_M] = mean_std(_per_seed(units, _attribute("delta_m")))
        for key, _ in EXTRA_COLUMNS:
            stats[key] = mean_std(_per_seed(units, _attribute(key)))
        kinds = sorted({r.peak_memory_kind for r in g.runs if r.peak_memory_kind})
        monitors = sorted({str(r.objective_monitor) for r in g.runs if r.objective_monitor})
        rows.append(Row(g, stats, kinds, monitors, units=units))
    experiments = list(dict.fromkeys(experiment_key(row.group.runs[0]) for row in rows))
    if len(experiments) > 1:
        for row in rows:
            row.experiment = f"E{experiments.index(experiment_key(row.group.runs[0])) + 1}"

    def order(row: Row):
        dm, obj = row.stats[DELTA_M].mean, row.stats["objective"].mean
        sign = _objective_sign(row.group.runs[0])
        exp = int(row.experiment[1:]) if row.experiment else 0
        return (
            exp,
            row.group.kind == "stl",
            dm is None,
            -(dm or 0.0),
            obj is None,
            -sign * (obj or 0.0),
            row.group.label,
        )

    return sorted(rows, key=order)


def caveats(rows: Sequence[Row]) -> list[str]:
    """Notes that go under the leaderboard: groups whose runs repeat a seed (averaged per seed,
    ``n`` counts seeds), and rows of several experiments (ranked within each: their Δm are
    relative to other baselines and do not compare)."""
    out = []
    repeated = [
        (row.group.label, [(s, k) for s, k in row.group.seed_counts() if k > 1])
        for row in rows
        if any(k > 1 for _, k in row.group.seed_counts())
    ]
    if repeated:
        out.append(
            "n counts distinct seeds; runs that repeat a seed are averaged into one value first (their "
            "spread is not seed variance): "
            + "; ".join(f"{label}: " + ", ".join(f"seed {s} ×{k}" for s, k in seeds) for label, seeds in repeated)
        )
    exps: dict[str, list[int]] = {}
    for i, row in enumerate(rows, 1):
        if row.experiment:
            exps.setdefault(row.experiment, []).append(i)
    if exps:
        texts = []
        for e, numbers in exps.items():
            run = next(r for r in rows if r.experiment == e).group.runs[0]
            span = f"row {numbers[0]}" if len(numbers) == 1 else f"rows {numbers[0]}-{numbers[-1]}"
            texts.append(f"{e} ({span}): {_experiment_text(run)}")
        out.append(
            f"these runs come from {len(exps)} experiments (other primary tasks or data): Δm compares each "
            "run with its own single-task baselines, so Δm of different experiments do not compare; rows "
            "are ranked within each experiment. " + "; ".join(texts)
        )
    return out
