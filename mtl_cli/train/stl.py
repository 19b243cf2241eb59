"""``baseline=stl``: single-task baselines, one normal run directory ``<run_dir>/<task>/`` per
enabled task, with the run's data, backbone, optimizer, scheduler, schedule and seed. Two things
are forced, because a single task has nothing to share and nothing to balance: ``arch=hps`` (the
backbone plus the task's head) and ``weighting=ew`` with the task's weight 1 (the plain loss).
Each run selects its epoch by its task's primary metric
(``trainer.monitor=<task>/<primary metric>``) and is tested there.
``baselines.json`` (:mod:`mtl_cli.results.baselines`) then holds every task's test and val
(selected epoch) metrics, directions and primary metric, and the settings that make runs
comparable; Δm against it is :mod:`mtl_cli.results.delta_m`.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, Problem, RunInterrupted, UserError
from ..results.baselines import FILE, FORMAT, shared_settings
from ..results.delta_m import HIGHER, as_number
from ..validation import validate
from . import distributed
from .run import overwrite_requested, run_plan
from .rundir import (
    RunDirLock,
    make_run_dir,
    refuse_to_overwrite,
    setup_logging,
    start_over,
    write_json,
    write_text,
)
from .trainer import objective_value

log = logging.getLogger("mtl_cli")

#: overrides that the single-task runs replace (the rest of the command line is replayed as given)
_REPLACED = ("baseline", "baseline_dir", "run_dir", "resume", "arch", "weighting", "trainer.monitor")


def single_task_config(plain: dict, task: str, primary_metric: str, run_dir: Path, resume: str | None) -> dict:
    """The config of ``task``'s single-task run, from the run's plain (unvalidated) config: every
    other task disabled, this one primary, arch=hps, weighting=ew, its own monitor and run_dir."""
    c = copy.deepcopy(plain)
    c.pop("hydra", None)
    for name, node in c["tasks"].items():
        if isinstance(node, dict):
            node["enabled"] = name == task
    c["tasks"][task]["role"] = "primary"
    c["tasks"][task]["weight"] = 1.0  # a pre-scale of the one loss would only rescale the learning rate
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
            f"++tasks.{task}.weight=1.0",
            "arch=hps",
            "weighting=ew",
            f"trainer.monitor={monitor}",
        ]
    )


def _plain(cfg: Any) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return copy.deepcopy(dict(cfg))


def train_baselines(cfg: Any, plan, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """``baseline=stl``: one single-task run per enabled task in ``<run_dir>/<task>/``, then
    ``<run_dir>/baselines.json``; returns (and writes as summary.json) the combined summary.

    ``resume=auto`` continues each single-task run from its checkpoint (or starts it). Every
    single-task config is validated before the first one trains.
    """
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
    plain["tasks"] = copy.deepcopy(plan.cfg["tasks"])  # as validation wrote them: task patterns expanded
    names = list(plan.tasks)
    configs, plans = {}, {}
    for n in names:  # every single-task config checked before anything trains
        c = single_task_config(plain, n, plan.tasks[n]["primary_metric"], run_dir / n, resume)
        try:
            plans[n] = validate(copy.deepcopy(c))
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
    overwrite = overwrite_requested(plan.cfg)
    comm = distributed.current()
    held: dict = {}

    def prepare() -> None:  # rank 0 only (with several processes); its error reaches every process
        make_run_dir(run_dir)
        # the parent holds <run_dir>/.lock, each single-task run its own <run_dir>/<task>/.lock
        lock = RunDirLock(run_dir).__enter__()
        try:
            refuse_to_overwrite(run_dir, resume, overwrite, ("summary.json", FILE))
            for n in names:  # every task's directory checked before anything is written
                refuse_to_overwrite(run_dir / n, resume, overwrite)
            held["deleted"] = start_over(run_dir) if overwrite else []  # the parent's own files
        except BaseException:
            lock.__exit__(*sys.exc_info())
            raise
        held["lock"] = lock

    comm.on_main(prepare)
    if overwrite:  # each single-task run starts over in its own directory
        for n in names:
            plans[n].cfg["overwrite"] = True
    if not comm.is_main:  # the same single-task runs, nothing written here
        summaries = {n: run_plan(plans[n], run_dir / n, None) for n in names}
        return stl_summary(summaries, run_dir, time.perf_counter() - t0)
    lock = held["lock"]
    try:
        return _train_locked(plan, plans, configs, names, run_dir, overrides, t0, lock.note, held["deleted"])
    finally:
        lock.__exit__(None, None, None)


def _train_locked(
    plan, plans: dict, configs: dict, names: list[str], run_dir: Path, overrides, t0, took_over, deleted
) -> dict:
    """The single-task runs and baselines.json, ``run_dir`` locked."""
    for stale in ("summary.json", "error.json", FILE):  # a failed run must not leave an old baselines.json
        (run_dir / stale).unlink(missing_ok=True)
    handlers = setup_logging(run_dir)
    if took_over:
        log.warning("%s", took_over)
    if deleted:
        log.warning("overwrite=true: deleted %s of the earlier run in %s", ", ".join(deleted), run_dir)
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
                summaries[n] = run_plan(plans[n], run_dir / n, sub_over)
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
                as_number(s["val_selected"][n].get(pm)),
                as_number(s["test"][n].get(pm)),
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
