"""``baselines.json``, the file a ``baseline=stl`` run writes: reading it, checking that it serves
a run's tasks, and the settings that a fair Δm needs equal in the baselines and the run.

Nothing here imports torch: validation reads baselines through it.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from ..config.typecheck import flatten
from ..errors import ConfigError, Problem
from .delta_m import as_number

log = logging.getLogger("mtl_cli")

FILE = "baselines.json"


FORMAT = 1


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
            b[split] = {m: as_number(v) for m, v in b[split].items()}
    return doc


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
    a, b = flatten(baseline_config), flatten(shared_settings(cfg))
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
