"""Grouping runs that differ only by their seed: :func:`group_runs` (by the runs' overrides, see
:func:`default_items`, or by given config.yaml keys), each :class:`Group` labelled by the
``key=value`` words that tell it apart from the others; :func:`common_items`, the words all share."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.typecheck import flatten
from ..config.untrusted import UntrustedYAMLError, load_untrusted_yaml
from ..errors import ConfigError, Problem
from .runs import Run, _override_key

#: override / config keys that do not separate groups: the seed, where a run lives and how it was
#: resumed, and the baseline it is compared with (a per-seed baseline_dir would split seeds)
NOT_GROUPED = ("seed", "run_dir", "resume", "resume_strict", "baseline", "baseline_dir")


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
        """The recorded seeds of the group's runs, each once, in order of first appearance."""
        return list(dict.fromkeys(_text(r.seed) for r in self.runs if r.seed is not None))

    def seed_counts(self) -> list[tuple[str, int]]:
        """Each recorded seed with its number of runs (more than one: the seed was run again)."""
        counts: dict[str, int] = {}
        for r in self.runs:
            if r.seed is not None:
                counts[_text(r.seed)] = counts.get(_text(r.seed), 0) + 1
        return list(counts.items())


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
        v = load_untrusted_yaml(value)
    except UntrustedYAMLError:
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
    flat = flatten(run.config)
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
                keys = sorted({k for r in runs for k in flatten(r.config)})
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
