"""What ``mtl-report`` computes, as pure functions: find the run directories under some paths
(:func:`discover`), group runs that differ only by their seed (:func:`group_runs`), aggregate each
group's test metrics over seeds (:func:`aggregate`), the Pareto front of a set of points
(:func:`pareto_front`), mean curves over seeds (:func:`mean_curve`), and the leaderboard as text,
CSV and Markdown. Plots are in ``report/plots.py`` (matplotlib, the optional ``plots`` extra).

Nothing here imports torch: the report answers in well under a second.

A run directory holds ``summary.json`` (a finished run; also ``config.yaml``, ``overrides.yaml``,
``metrics.jsonl``). A folder with ``baselines.json`` is a ``baseline=stl`` run: one single-task
run per task in ``<dir>/<task>/``; it becomes one "stl" run whose test metrics are those of its
single-task runs together. A folder with run files but no ``summary.json`` is a failed, stopped
or still running run: it is listed as skipped, with the message of its ``error.json`` if any.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, Problem

#: files that make a folder a run directory (finished or not)
RUN_FILES = ("summary.json", "config.yaml", "overrides.yaml", "metrics.jsonl", "error.json", "train.log")
#: override / config keys that do not separate groups: the seed, where a run lives and how it was
#: resumed, and the baseline it is compared with (a per-seed baseline_dir would split seeds)
NOT_GROUPED = ("seed", "run_dir", "resume", "resume_strict", "baseline", "baseline_dir")
#: the columns besides task metrics: (key in Row.stats, title in tables)
EXTRA_COLUMNS = (
    ("time_per_step_s", "time/step s"),
    ("time_per_epoch_s", "time/epoch s"),
    ("peak_memory_mb", "peak MB"),
    ("objective", "objective"),
)
DELTA_M = "delta_m"
ARROWS = {"higher": "↑", "lower": "↓"}


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One finished run (or one baseline=stl run: its single-task runs together)."""

    path: Path
    kind: str  # "mtl", or "stl" for a baseline=stl run
    tasks: dict[str, dict]  # summary.json "tasks": {task: {role, primary_metric, directions, ...}}
    test: dict[str, dict[str, Any]]  # {task: {metric: value}}
    delta_m: float | None = None  # summary.json delta_m.test (percent)
    objective: float | None = None
    objective_direction: str = "maximize"
    objective_monitor: str | None = None
    time_per_step_s: float | None = None
    time_per_epoch_s: float | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    seed: Any = None
    overrides: list[str] | None = None  # overrides.yaml (or .hydra/overrides.yaml); None: neither
    config: dict | None = None  # config.yaml
    metrics_files: list[Path] = field(default_factory=list)

    def direction(self, task: str, metric: str) -> str | None:
        return (self.tasks.get(task, {}).get("directions") or {}).get(metric)


@dataclass
class Skipped:
    path: Path
    reason: str


def _num(x: Any) -> float | None:
    """A finite float, or None (missing, null, NaN, inf, or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path.name} unreadable: {e}"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _overrides_of(d: Path) -> list[str] | None:
    for p in (d / "overrides.yaml", d / ".hydra" / "overrides.yaml"):
        v = _read_yaml(p)
        if isinstance(v, list):
            return [str(o) for o in v]
    return None


def _override_key(o: str) -> str:
    return o.lstrip("+~").split("=", 1)[0]


def _seed_of(config: dict | None, overrides: list[str] | None) -> Any:
    if isinstance(config, dict) and "seed" in config:
        return config["seed"]
    for o in overrides or []:
        if _override_key(o) == "seed" and "=" in o:
            return yaml.safe_load(o.split("=", 1)[1])
    return None


def _error_reason(d: Path) -> str:
    err, _ = _read_json(d / "error.json") if (d / "error.json").is_file() else (None, None)
    if isinstance(err, dict) and err.get("message"):
        msg = " ".join(line.strip() for line in str(err["message"]).splitlines() if line.strip())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        return f"failed: {err.get('type', 'error')}: {msg}"
    return "no summary.json: still running, stopped (resume it with mtl-train resume=<dir>) or killed"


def _is_stl_config(config: Any, overrides: list[str] | None) -> bool:
    if isinstance(config, dict) and config.get("baseline") == "stl":
        return True
    return any(o.lstrip("+~") == "baseline=stl" for o in overrides or [])


def load_run(d: Path) -> Run | Skipped:
    """The run in folder ``d`` (which holds summary.json), or why it cannot be read."""
    s, err = _read_json(d / "summary.json")
    if err:
        return Skipped(d, err)
    if not isinstance(s, dict) or not isinstance(s.get("test"), dict):
        return Skipped(d, "summary.json has no 'test' metrics")
    test = {t: dict(v) for t, v in s["test"].items() if isinstance(v, dict)}
    tasks = s.get("tasks") if isinstance(s.get("tasks"), dict) else {}
    tasks = {t: dict(tasks.get(t) or {}) for t in [*tasks, *[t for t in test if t not in tasks]]}
    dm = s.get("delta_m")
    obj = s.get("objective") if isinstance(s.get("objective"), dict) else {}
    train_time, epochs = _num(s.get("train_time_s")), _num(s.get("epochs"))
    config = _read_yaml(d / "config.yaml")
    config = config if isinstance(config, dict) else None
    overrides = _overrides_of(d)
    return Run(
        path=d,
        kind="mtl",
        tasks=tasks,
        test=test,
        delta_m=_num(dm.get("test")) if isinstance(dm, dict) else None,
        objective=_num(obj.get("value")),
        objective_direction=str(obj.get("direction") or "maximize"),
        objective_monitor=obj.get("monitor"),
        time_per_step_s=_num(s.get("time_per_step_s")),
        time_per_epoch_s=train_time / epochs if train_time is not None and epochs else None,
        peak_memory_mb=_num(s.get("peak_memory_mb")),
        peak_memory_kind=s.get("peak_memory_kind"),
        seed=_seed_of(config, overrides),
        overrides=overrides,
        config=config,
        metrics_files=[d / "metrics.jsonl"] if (d / "metrics.jsonl").is_file() else [],
    )


def load_stl_run(d: Path) -> Run | Skipped:
    """A baseline=stl run: ``baselines.json`` ({"tasks": {task: {"test", "directions",
    "primary_metric", "run_dir"}}, "config": {...}}) and the single-task runs in ``<d>/<task>/``.

    Time per step and per epoch are the sums over the single-task runs (what training all of
    them costs, to compare with one multi-task step); peak memory is the largest of them."""
    bj, err = _read_json(d / "baselines.json")
    if err:
        return Skipped(d, err)
    if not isinstance(bj, dict) or not isinstance(bj.get("tasks"), dict) or not bj["tasks"]:
        return Skipped(d, "baselines.json has no 'tasks'")
    tasks, test, files, children = {}, {}, [], []
    for t, b in bj["tasks"].items():
        b = b if isinstance(b, dict) else {}
        child = d / t
        if not child.is_dir() and b.get("run_dir") and Path(b["run_dir"]).is_dir():
            child = Path(b["run_dir"])
        cs, _ = _read_json(child / "summary.json") if (child / "summary.json").is_file() else (None, None)
        cs = cs if isinstance(cs, dict) else {}
        info = dict(((cs.get("tasks") or {}).get(t)) or {})
        info.setdefault("role", "primary")
        if b.get("primary_metric"):
            info["primary_metric"] = b["primary_metric"]
        if isinstance(b.get("directions"), dict):
            info["directions"] = dict(b["directions"])
        tasks[t] = info
        tv = b.get("test") if isinstance(b.get("test"), dict) else ((cs.get("test") or {}).get(t) or {})
        test[t] = dict(tv)
        children.append(cs)
        if (child / "metrics.jsonl").is_file():
            files.append(child / "metrics.jsonl")

    def total(get) -> float | None:
        vals = [get(c) for c in children]
        return math.fsum(vals) if vals and all(v is not None for v in vals) else None

    def per_epoch(c: dict) -> float | None:
        tt, ep = _num(c.get("train_time_s")), _num(c.get("epochs"))
        return tt / ep if tt is not None and ep else None

    peaks = [p for p in (_num(c.get("peak_memory_mb")) for c in children) if p is not None]
    kinds = sorted({str(c["peak_memory_kind"]) for c in children if c.get("peak_memory_kind")})
    config = _read_yaml(d / "config.yaml")
    if not isinstance(config, dict):  # the parent may keep no config of its own: a task's run's
        config = next((c for c in (_read_yaml(d / t / "config.yaml") for t in tasks) if isinstance(c, dict)), None)
    overrides = _overrides_of(d)
    seed = _seed_of(config, overrides)
    if seed is None and isinstance(bj.get("config"), dict):
        seed = bj["config"].get("seed")
    return Run(
        path=d,
        kind="stl",
        tasks=tasks,
        test=test,
        time_per_step_s=total(lambda c: _num(c.get("time_per_step_s"))),
        time_per_epoch_s=total(per_epoch),
        peak_memory_mb=max(peaks) if peaks else None,
        peak_memory_kind=",".join(kinds) or None,
        seed=seed,
        overrides=overrides,
        config=config,
        metrics_files=files,
    )


def _natural(p: Path) -> list:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", p.name) if tok]


def _walk(d: Path, runs: list[Run], skipped: list[Skipped], seen: set[Path]) -> None:
    d = d.resolve()
    if d in seen:
        return
    seen.add(d)
    if (d / "baselines.json").is_file():
        r = load_stl_run(d)
    elif (d / "summary.json").is_file():
        r = load_run(d)
    elif _is_stl_config(_read_yaml(d / "config.yaml"), _overrides_of(d)):
        reason = _error_reason(d)
        if not reason.startswith("failed"):
            reason = "baseline=stl run without baselines.json: not finished"
        r = Skipped(d, reason)
    elif any((d / f).is_file() for f in RUN_FILES):
        r = Skipped(d, _error_reason(d))
    else:  # a sweep folder (numbered jobs), or any folder above runs
        try:
            subdirs = sorted(
                (p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "checkpoints"),
                key=_natural,
            )
        except OSError:
            subdirs = []
        for sub in subdirs:
            _walk(sub, runs, skipped, seen)
        return
    (runs if isinstance(r, Run) else skipped).append(r)


def discover(paths: Iterable[str | Path]) -> tuple[list[Run], list[Skipped]]:
    """Every run directory at or under ``paths``, in order (job folders in numeric order), each
    once: finished runs, and the folders that look like runs but have no readable summary.json
    (failed, stopped, running) with the reason. A path to a summary.json stands for its folder.
    Raises ConfigError naming every path that does not exist."""
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ConfigError(
            [
                Problem(
                    str(p),
                    "no such file or folder",
                    fix="give run directories or sweep directories (folders holding run directories)",
                )
                for p in missing
            ]
        )
    runs: list[Run] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for p in paths:
        _walk(p.parent if p.is_file() else p, runs, skipped, seen)
    return runs, skipped


# ----------------------------------------------------------------------------- groups
@dataclass
class Group:
    """Runs that differ only by seed. ``fields``: the grouping keys that tell groups apart, with
    this group's values; ``label``: them as ``key=value`` words (prefixed with "stl" for baselines)."""

    kind: str
    items: tuple[tuple[str, str], ...]
    runs: list[Run]
    label: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as values."""
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def canonical(value: str) -> str:
    """An override's value in one spelling: Hydra writes ``False`` in a sweep job's overrides for
    the ``false`` given on the command line, and ``1e-3`` and ``0.001`` are the same number."""
    try:
        v = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(v, str):
        try:
            return repr(float(v)) if v.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return _text(v) if isinstance(v, (bool, int, float)) or v is None else value


def _grouped(key: str) -> bool:
    top = key.split(".", 1)[0]
    return top not in NOT_GROUPED and top != "hydra" and key not in NOT_GROUPED


def default_items(run: Run) -> tuple[tuple[str, str], ...]:
    """What separates ``run`` from runs of other groups: its overrides minus the seed, run_dir,
    resume, baseline and hydra.* ones; for a run without overrides.yaml, its whole config.yaml
    minus the same keys."""
    if run.overrides is not None:
        kv: dict[str, str] = {}
        for o in run.overrides:
            k = _override_key(o)
            if _grouped(k):
                kv[o.split("=", 1)[0]] = canonical(o.split("=", 1)[1]) if "=" in o else ""
        return tuple(kv.items())
    flat = flatten(run.config or {})
    return tuple((k, _text(v)) for k, v in flat.items() if _grouped(k))


def config_value(config: dict | None, key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def group_runs(runs: Sequence[Run], by: Sequence[str] | None = None) -> list[Group]:
    """Groups of runs that differ only by seed, in order of their first run.

    ``by=None``: by :func:`default_items`. ``by=["weighting.name", ...]``: by those values of
    config.yaml. Baseline (stl) runs never share a group with multi-task runs. Raises ConfigError
    for a ``by`` key that no run's config has (with the closest keys)."""
    if by:
        problems = []
        for key in by:
            if runs and not any(config_value(r.config, key)[0] for r in runs):
                keys = sorted({k for r in runs for k in flatten(r.config or {})})
                close = difflib.get_close_matches(key, keys, n=4, cutoff=0.5)
                problems.append(
                    Problem(
                        "--group-by",
                        "no run's config.yaml has this key",
                        key,
                        allowed=("did you mean " + ", ".join(close))
                        if close
                        else "dotted config keys such as weighting.name, arch.name, optimizer.lr",
                        fix="name keys of config.yaml (mtl-train --cfg job shows them), comma-separated",
                    )
                )
        if problems:
            raise ConfigError(problems)
    groups: dict[tuple, Group] = {}
    for r in runs:
        if by:
            items = tuple((k, _text(v) if found else "?") for k in by for found, v in [config_value(r.config, k)])
        else:
            items = default_items(r)
        gkey = (r.kind, frozenset(items))
        if gkey not in groups:
            groups[gkey] = Group(kind=r.kind, items=items, runs=[])
        groups[gkey].runs.append(r)
    out = list(groups.values())
    _label(out, by)
    return out


def _label(groups: list[Group], by: Sequence[str] | None) -> None:
    sets = [set(g.items) for g in groups]
    common = set.intersection(*sets) if sets and not by else set()
    varying: list[str] = []
    for g in groups:
        for k, v in g.items:
            if (k, v) not in common and k not in varying:
                varying.append(k)
    for g in groups:
        own = dict(g.items)
        g.fields = {k: own.get(k, "") for k in varying}
        words = [f"{k}={own[k]}" for k in varying if k in own]
        if g.kind == "stl":
            words = ["stl", *words]
        g.label = " ".join(words) or g.kind


def common_items(groups: Sequence[Group]) -> list[str]:
    """The ``key=value`` words every group shares (shown once above the table)."""
    if not groups:
        return []
    sets = [set(g.items) for g in groups]
    common = set.intersection(*sets)
    return [f"{k}={v}" for k, v in groups[0].items if (k, v) in common]


# ----------------------------------------------------------------------------- statistics
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


# ----------------------------------------------------------------------------- Pareto front
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


# ----------------------------------------------------------------------------- curves
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


# ----------------------------------------------------------------------------- formatting
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
    return ",".join(_text(s) for s in g.seeds if s is not None)


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


def to_text(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    head, body = table_cells(rows, columns)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        cells = [c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_markdown(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    head, body = table_cells(rows, columns)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:", ":---", "---:", "---:", *["---:"] * (len(head) - 4)]
    return "\n".join([line(head), "|" + "|".join(align) + "|", *[line(r) for r in body]])


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
    ]


def to_csv(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """The leaderboard with one column per statistic (``<key>_mean``, ``_std``, ``_n``) at full
    precision (Python's shortest round-trip float text); empty cells for missing values."""
    header = csv_header(rows, columns)
    fields = header[3 : header.index("n")]
    stats = [DELTA_M, *[c.key for c in columns], *[k for k, _ in EXTRA_COLUMNS]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, row in enumerate(rows, 1):
        g = row.group
        cells: list[Any] = [i, g.label, g.kind, *[g.fields.get(f, "") for f in fields], row.n, _seeds_text(g)]
        for k in stats:
            s = row.stats[k]
            cells += [repr(s.mean) if s.mean is not None else "", repr(s.std) if s.std is not None else "", s.n]
        cells += [";".join(row.memory_kinds), ";".join(row.monitors), ";".join(str(r.path) for r in g.runs)]
        w.writerow(cells)
    return buf.getvalue()
