"""Δm, the multi-task performance measure against single-task baselines (Maninis et al. 2019;
Vandenhende et al. 2021; as LibMTL computes it). For each task ``t`` and each of its metrics ``m``
(never the loss)

    rel = s_m * (M_mtl - M_stl) / |M_stl|,   s_m = +1 if higher is better, -1 if lower is better

averaged over the task's metrics, then over tasks, in percent: positive means the multi-task model
beats the single-task ones. A metric whose baseline is 0 or not finite (no relative change exists),
or whose own value is not finite, is skipped and listed. Dividing by ``|M_stl|`` equals LibMTL's
``M_stl`` for every positive baseline, and keeps the sign right for a negative one (an R² below 0).

Pure: no files, no torch (``mtl-report`` imports it too).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

HIGHER, LOWER = "higher", "lower"


def as_number(v: Any) -> float:
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
            b, v = as_number(base[metric]), as_number(results.get(task, {}).get(metric))
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
