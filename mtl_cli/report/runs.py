"""Reading run directories into records: :func:`discover` finds the run directories at or under
some paths, :func:`load_run` reads a finished run into a :class:`Run`, :func:`load_stl_run` a
baseline=stl run; a folder that cannot be read becomes a :class:`Skipped` with the reason.

A run directory holds ``summary.json`` (a finished run; also ``config.yaml``, ``overrides.yaml``,
``metrics.jsonl``). A folder with ``baselines.json`` is a ``baseline=stl`` run: one single-task
run per task in ``<dir>/<task>/``; it becomes one "stl" run whose test metrics are those of its
single-task runs together. A folder with run files but no ``summary.json`` is a failed, stopped
or still running run: it is listed as skipped, with the message of its ``error.json`` if any.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.untrusted import UntrustedYAMLError, load_untrusted_yaml
from ..errors import ConfigError, Problem
from .stats import _num

#: files that make a folder a run directory (finished or not)
RUN_FILES = ("summary.json", "config.yaml", "overrides.yaml", "metrics.jsonl", "error.json", "train.log")
#: the metric directions of summary.json, with their arrows in table titles
ARROWS = {"higher": "↑", "lower": "↓"}


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


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path.name} unreadable: {e}"


def _read_yaml(path: Path) -> Any:
    """A run directory's YAML as untrusted data (bounded, no aliases); None when unreadable."""
    try:
        return load_untrusted_yaml(path.read_bytes()) if path.is_file() else None
    except (OSError, UntrustedYAMLError):
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
            try:
                return load_untrusted_yaml(o.split("=", 1)[1])
            except UntrustedYAMLError:
                return None
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
