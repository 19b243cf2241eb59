"""Single-task baselines (``baseline=stl``) and Δm, the multi-task performance measure against them.

``baseline=stl`` trains one single-task model per enabled task, each a normal run directory
``<run_dir>/<task>/``, with the run's data, backbone, optimizer, scheduler, schedule and seed. Two
things are forced, because a single task has nothing to share and nothing to balance:
``arch=hps`` (the backbone plus the task's head) and ``weighting=ew`` (the plain loss, so
``tasks.<name>.weight`` does not rescale it). Each run selects its epoch by its task's primary
metric (``trainer.monitor=<task>/<primary metric>``) and is tested there. ``baselines.json`` then
holds every task's test and val (selected epoch) metrics, directions and primary metric, and the
settings that make runs comparable.

Δm (Maninis et al. 2019; Vandenhende et al. 2021; as LibMTL computes it) compares a multi-task
model with those baselines: for each task ``t`` and each of its metrics ``m`` (never the loss)

    rel = s_m * (M_mtl - M_stl) / |M_stl|,   s_m = +1 if higher is better, -1 if lower is better

averaged over the task's metrics, then over tasks, in percent: positive means the multi-task model
beats the single-task ones. A metric whose baseline is 0 or not finite (no relative change exists),
or whose own value is not finite, is skipped and listed. Dividing by ``|M_stl|`` equals LibMTL's
``M_stl`` for every positive baseline, and keeps the sign right for a negative one (an R² below 0).

Nothing here imports torch at module level: ``config/validate.py`` reads baselines through it and
``mtl-report`` imports :func:`delta_m`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ..config.typecheck import flatten
from ..errors import ConfigError, Problem

log = logging.getLogger("mtl_cli")

FILE = "baselines.json"
FORMAT = 1
HIGHER, LOWER = "higher", "lower"
#: the settings a fair Δm needs equal in the baselines and the multi-task run (baselines.json "config")
SHARED = (
    "data",
    "datasets",
    "backbone",
    "seed",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.batch_size",
    "optimizer",
    "scheduler",
)
#: overrides that the single-task runs replace (the rest of the command line is replayed as given)
_REPLACED = ("baseline", "baseline_dir", "run_dir", "resume", "arch", "weighting", "trainer.monitor")


# ---------------------------------------------------------------------------------------- Δm
def _num(v: Any) -> float:
    """A metric value as a float; None (NaN in JSON files) and non-numbers become NaN."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return math.nan
    return float(v)


def delta_m(results: dict, baselines: dict, directions: dict) -> dict:
    """Δm of ``results`` against ``baselines``, in percent. Pure: no files, no torch.

    - ``results``: ``{task: {metric: value}}`` of the multi-task model (extra keys such as
      ``loss`` are ignored);
    - ``baselines``: ``{task: {metric: value}}`` of the single-task models, same split;
    - ``directions``: ``{task: {metric: "higher" | "lower"}}``: the tasks and metrics that count
      (a ``loss`` entry is ignored).

    Returns ``{"delta_m": %, "per_task": {task: {metric: rel %}}, "task_mean": {task: %},
    "skipped": [{"task", "metric", "reason"}]}``. ``delta_m`` is NaN when no metric could count.
    """
    per_task: dict[str, dict[str, float]] = {}
    task_mean: dict[str, float] = {}
    skipped: list[dict] = []
    for task, dirs in directions.items():
        rels: dict[str, float] = {}
        for metric, direction in dirs.items():
            if metric == "loss":
                continue
            if direction not in (HIGHER, LOWER):
                raise ValueError(f"direction of {task}/{metric} must be {HIGHER!r} or {LOWER!r}, got {direction!r}")
            base = baselines.get(task, {})
            if metric not in base:
                skipped.append({"task": task, "metric": metric, "reason": "no baseline value"})
                continue
            b, v = _num(base[metric]), _num(results.get(task, {}).get(metric))
            if not math.isfinite(b):
                skipped.append({"task": task, "metric": metric, "reason": "baseline is NaN"})
            elif b == 0:
                skipped.append({"task": task, "metric": metric, "reason": "baseline is 0"})
            elif not math.isfinite(v):
                skipped.append({"task": task, "metric": metric, "reason": "value is NaN"})
            else:
                sign = 1.0 if direction == HIGHER else -1.0
                rels[metric] = 100.0 * sign * (v - b) / abs(b)
        if rels:
            per_task[task] = rels
            task_mean[task] = sum(rels.values()) / len(rels)
    dm = sum(task_mean.values()) / len(task_mean) if task_mean else math.nan
    return {"delta_m": dm, "per_task": per_task, "task_mean": task_mean, "skipped": skipped}


def delta_m_report(test: dict, val: dict, doc: dict, directions: dict, baseline_dir: str) -> dict:
    """summary.json's ``delta_m`` entry: Δm on test and on val (the selected epoch), the per-task
    relative changes on test, and every skipped metric with its split."""
    base = doc["tasks"]
    t = delta_m(test, {n: b["test"] for n, b in base.items()}, directions)
    v = delta_m(val, {n: b["val"] for n, b in base.items()}, directions)
    skipped = [{"split": "test", **s} for s in t["skipped"]] + [{"split": "val", **s} for s in v["skipped"]]
    return {
        "test": t["delta_m"],
        "val": v["delta_m"],
        "per_task": t["per_task"],
        "skipped": skipped,
        "baseline_dir": str(Path(str(baseline_dir)).expanduser().resolve()),
    }


# ---------------------------------------------------------------------------------------- baselines.json
def _fix(bdir: Any, new: bool = False) -> str:
    """How to get usable baselines: train them into ``bdir`` (missing), or into a new directory
    (``new``: ``bdir`` holds baselines of other tasks, which other runs may still point at)."""
    where = "<a new dir>" if new else bdir
    return (
        f"train them first: mtl-train baseline=stl run_dir={where} <the same data, backbone and task "
        "overrides as this run>, then set baseline_dir to that run_dir"
    )


def read_baselines(baseline_dir: Any) -> tuple[dict | None, list[Problem]]:
    """``(baselines.json as a dict, [])`` or ``(None, problems naming baseline_dir)``."""
    d = Path(str(baseline_dir)).expanduser()
    if not d.is_dir():
        what = "is a file, not a directory" if d.exists() else "no such directory"
        return None, [
            Problem(
                "baseline_dir",
                what,
                str(baseline_dir),
                allowed="the run directory of a finished baseline=stl run",
                fix=_fix(baseline_dir),
            )
        ]
    path = d / FILE
    if not path.is_file():
        fix = _fix(baseline_dir)
        if (d.parent / FILE).is_file():  # pointed at one single-task run inside a baseline run
            fix = f"use its parent directory: baseline_dir={d.parent}"
        return None, [
            Problem(
                "baseline_dir",
                f"{d} has no {FILE} (it is not a finished baseline=stl run)",
                str(baseline_dir),
                allowed=f"a directory holding {FILE}",
                fix=fix,
            )
        ]
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, [Problem("baseline_dir", f"cannot read {path}: {e}", str(baseline_dir), fix=_fix(baseline_dir))]
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    ok = isinstance(tasks, dict) and all(
        isinstance(b, dict) and all(isinstance(b.get(k), dict) for k in ("test", "val", "directions"))
        for b in tasks.values()
    )
    if not ok:
        return None, [
            Problem(
                "baseline_dir",
                f"{path} is not a baselines file (each task needs test, val and directions)",
                str(baseline_dir),
                fix=_fix(baseline_dir),
            )
        ]
    return doc, []


def baseline_problems(baseline_dir: Any, tasks: dict[str, dict]) -> list[Problem]:
    """What keeps ``baseline_dir`` from serving the enabled primary ``tasks`` (validated task
    dicts: role, metrics, directions): a missing directory or file, missing tasks or metrics, a
    metric measured in the other direction (another task kind)."""
    doc, problems = read_baselines(baseline_dir)
    if doc is None:
        return problems
    have = doc["tasks"]
    counted = {n: t for n, t in tasks.items() if t.get("role", "primary") == "primary"}
    missing = [n for n in counted if n not in have]
    if missing:
        problems.append(
            Problem(
                "baseline_dir",
                f"{Path(str(baseline_dir)) / FILE} has no baseline for task(s) {', '.join(missing)}",
                missing,
                allowed="its tasks: " + (", ".join(have) or "(none)"),
                fix=_fix(baseline_dir, new=True),
            )
        )
    for n, t in counted.items():
        if n not in have:
            continue
        b = have[n]
        known = set(b["directions"]) & set(b["test"]) & set(b["val"])
        lacking = [m for m in t["metrics"] if m not in known]
        if lacking:
            problems.append(
                Problem(
                    "baseline_dir",
                    f"the baseline of task {n} lacks metric(s) {', '.join(lacking)} of this run",
                    lacking,
                    allowed=f"its metrics: {', '.join(sorted(known)) or '(none)'}",
                    fix=f"train the baselines with the same tasks.{n}.metrics ({_fix(baseline_dir, new=True)}), "
                    f"or set tasks.{n}.metrics to metrics the baseline has",
                )
            )
        flipped = [m for m in t["metrics"] if m in known and b["directions"][m] != t["directions"].get(m)]
        if flipped:
            problems.append(
                Problem(
                    "baseline_dir",
                    f"the baseline of task {n} measures {', '.join(flipped)} in the other direction "
                    "(a task of another kind)",
                    {m: b["directions"][m] for m in flipped},
                    fix=f"train the baselines with the same task kinds ({_fix(baseline_dir, new=True)})",
                )
            )
    return problems


def load_baselines(baseline_dir: Any) -> dict:
    """baselines.json of ``baseline_dir``, NaN where the file has null; ConfigError when unreadable."""
    doc, problems = read_baselines(baseline_dir)
    if doc is None:
        raise ConfigError(problems)
    for b in doc["tasks"].values():
        for split in ("test", "val"):
            b[split] = {m: _num(v) for m, v in b[split].items()}
    return doc


# ---------------------------------------------------------------------------------------- settings
def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def shared_settings(cfg: dict) -> dict:
    """baselines.json's ``config``: the settings (``SHARED``) of a validated config, nested."""
    out: dict = {}
    for key in SHARED:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(_get(cfg, key))
    return out


def setting_differences(baseline_config: dict, cfg: dict) -> list[tuple[str, Any, Any]]:
    """``(key, value in the baselines, value here)`` for every shared setting that differs."""
    a, b = flatten(baseline_config or {}), flatten(shared_settings(cfg))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def warn_if_settings_differ(doc: dict, cfg: dict, baseline_dir: Any) -> list[tuple[str, Any, Any]]:
    diff = setting_differences(doc.get("config") or {}, cfg)
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in diff[:12])
        more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
        log.warning(
            "baseline_dir=%s: the baselines were trained with other settings (%s%s); delta_m compares unlike runs",
            baseline_dir,
            shown,
            more,
        )
    return diff


# ---------------------------------------------------------------------------------------- baseline=stl
def single_task_config(plain: dict, task: str, primary_metric: str, run_dir: Path, resume: str | None) -> dict:
    """The config of ``task``'s single-task run, from the run's plain (unvalidated) config: every
    other task disabled, this one primary, arch=hps, weighting=ew, its own monitor and run_dir."""
    c = copy.deepcopy(plain)
    c.pop("hydra", None)
    for name, node in c["tasks"].items():
        if isinstance(node, dict):
            node["enabled"] = name == task
    c["tasks"][task]["role"] = "primary"
    c["arch"] = {"name": "hps"}
    c["weighting"] = {"name": "ew"}
    c["trainer"]["monitor"] = f"{task}/{primary_metric}"
    c.update(baseline=None, baseline_dir=None, run_dir=str(run_dir), resume=resume)
    return c


def single_task_overrides(overrides: list[str], task: str, others: list[str], monitor: str) -> list[str]:
    """overrides.yaml of a single-task run: the run's own command line without the keys that
    ``single_task_config`` replaces, then those replacements."""

    def key(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0]

    kept = [o for o in overrides if not any(key(o) == k or key(o).startswith(k + ".") for k in _REPLACED)]
    forced = [f"tasks.{n}.enabled=false" for n in others]
    return (
        kept
        + forced
        + [
            f"tasks.{task}.enabled=true",
            f"tasks.{task}.role=primary",
            "arch=hps",
            "weighting=ew",
            f"trainer.monitor={monitor}",
        ]
    )


def _plain(cfg: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return copy.deepcopy(dict(cfg))


def train_baselines(cfg: Any, plan, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """``baseline=stl``: one single-task run per enabled task in ``<run_dir>/<task>/``, then
    ``<run_dir>/baselines.json``; returns (and writes as summary.json) the combined summary.

    ``resume=auto`` continues each single-task run from its checkpoint (or starts it). Every
    single-task config is validated before the first one trains.
    """
    from omegaconf import OmegaConf

    from ..errors import RunInterrupted, UserError
    from .api import train
    from .rundir import make_run_dir, setup_logging, write_json, write_text

    resume = plan.cfg.get("resume")
    if resume not in (None, "", "null", "auto"):
        raise ConfigError(
            [
                Problem(
                    "resume",
                    "baseline=stl continues its single-task runs with resume=auto",
                    resume,
                    allowed="null or auto",
                    fix="mtl-train baseline=stl run_dir=<the baseline run> resume=auto <its other overrides>",
                )
            ]
        )
    resume = "auto" if resume == "auto" else None
    plain = _plain(cfg)
    names = list(plan.tasks)
    configs = {}
    from ..config.validate import validate

    for n in names:  # every single-task config checked before anything trains
        c = single_task_config(plain, n, plan.tasks[n]["primary_metric"], run_dir / n, resume)
        try:
            validate(copy.deepcopy(c))
        except ConfigError as e:
            raise ConfigError(
                [
                    Problem(
                        q.key,
                        f"in the single-task baseline of {n} (arch=hps, weighting=ew): {q.message}",
                        q.value,
                        q.allowed,
                        q.fix,
                    )
                    for q in e.problems
                ]
            ) from None
        configs[n] = c

    t0 = time.perf_counter()
    make_run_dir(run_dir)
    for stale in ("summary.json", "error.json", FILE):  # a failed run must not leave an old baselines.json
        (run_dir / stale).unlink(missing_ok=True)
    handlers = setup_logging(run_dir)
    fh, console = handlers
    parent_cfg = dict(plan.cfg, run_dir=str(run_dir))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(parent_cfg)))
    if overrides is not None:
        write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    summaries: dict[str, dict] = {}
    try:
        log.info(
            "baseline=stl: %d single-task runs (%s) in %s; arch=hps, weighting=ew",
            len(names),
            ", ".join(names),
            run_dir,
        )
        for i, n in enumerate(names):
            c = configs[n]
            log.info("baseline %d/%d: task %s, monitor %s", i + 1, len(names), n, c["trainer"]["monitor"])
            sub_over = (
                None
                if overrides is None
                else single_task_overrides(list(overrides), n, [m for m in names if m != n], c["trainer"]["monitor"])
            )
            log.removeHandler(console)  # the single-task run prints through its own handler
            try:
                summaries[n] = train(OmegaConf.create(c), run_dir / n, sub_over)
            finally:
                log.addHandler(console)
        doc = {
            "format": FORMAT,
            "tasks": {
                n: {
                    "kind": s["tasks"][n]["kind"],
                    "test": s["test"][n],
                    "val": s["val_selected"][n],
                    "directions": s["tasks"][n]["directions"],
                    "primary_metric": s["tasks"][n]["primary_metric"],
                    "selected_epoch": s["selected_epoch"],
                    "run_dir": s["run_dir"],
                }
                for n, s in summaries.items()
            },
            "config": shared_settings(plan.cfg),
        }
        write_json(run_dir / FILE, doc)
        summary = stl_summary(summaries, run_dir, time.perf_counter() - t0)
        write_json(run_dir / "summary.json", summary)
        for n, s in summaries.items():
            pm = s["tasks"][n]["primary_metric"]
            log.info(
                "baseline %s: %s val %.4g, test %.4g (epoch %s, %s)",
                n,
                pm,
                _num(s["val_selected"][n].get(pm)),
                _num(s["test"][n].get(pm)),
                s["selected_epoch"],
                s["run_dir"],
            )
        log.info("baselines written to %s; point multi-task runs at them with baseline_dir=%s", run_dir / FILE, run_dir)
        return summary
    except RunInterrupted:
        log.warning(
            "baseline=stl interrupted; continue every task with: mtl-train baseline=stl run_dir=%s "
            "resume=auto <the same overrides>",
            run_dir,
        )
        raise
    except BaseException as e:
        log.removeHandler(console)
        if not isinstance(e, UserError):
            log.error("baseline=stl failed: %s: %s", type(e).__name__, e)
        write_json(run_dir / "error.json", {"type": type(e).__name__, "message": str(e)})
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def stl_summary(summaries: dict[str, dict], run_dir: Path, wall: float) -> dict:
    """The summary of a baseline=stl run: each task's row from its own single-task run, in the
    shape of a normal run's summary (so the end-of-run table prints it), marked ``baseline: stl``.

    The objective is the mean of the single-task runs' selection scores (each its task's primary
    metric, negated where lower is better)."""
    from .trainer import objective_value

    values = [objective_value(s) for s in summaries.values()]
    terms = []
    for n, s in summaries.items():
        pm = s["tasks"][n]["primary_metric"]
        terms.append(("" if s["tasks"][n]["directions"][pm] == HIGHER else "-") + f"{n}/{pm}")
    steps = sum(s["steps"] for s in summaries.values())
    train_time = sum(s["train_time_s"] for s in summaries.values())
    first = next(iter(summaries.values()))
    return {
        "baseline": "stl",
        "run_dir": str(run_dir),
        "baselines": str(run_dir / FILE),
        "objective": {
            "monitor": f"mean({', '.join(terms)})",
            "value": sum(values) / len(values) if values else math.nan,
            "direction": "maximize",
        },
        "selected_epoch": ", ".join(f"{n} {s['selected_epoch']}" for n, s in summaries.items()),
        "selected_epochs": {n: s["selected_epoch"] for n, s in summaries.items()},
        "epochs": max(s["epochs"] for s in summaries.values()),
        "steps": steps,
        "runs": {n: s["run_dir"] for n, s in summaries.items()},
        "tasks": {n: s["tasks"][n] for n, s in summaries.items()},
        "test": {n: s["test"][n] for n, s in summaries.items()},
        "val_selected": {n: s["val_selected"][n] for n, s in summaries.items()},
        "time_per_step_s": train_time / max(1, steps),
        "train_time_s": train_time,
        "wall_time_s": wall,
        "peak_memory_mb": max(s["peak_memory_mb"] for s in summaries.values()),
        "peak_memory_kind": first["peak_memory_kind"],
        "device": first["device"],
        "environment": first["environment"],
    }
