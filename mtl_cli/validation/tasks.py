"""Tasks: each one's kind, target, input, loss, metrics and head resolved against the data's
spec and the task kind's rules."""

from __future__ import annotations

import fnmatch
from typing import Any

from ..config.checks import Problems, check_component, check_schema
from ..config.schema import TaskConfig
from ..data.base import PRIMARY, DataSpec, qualify
from ..registry import BACKBONES, HEADS, TASK_KINDS


def check_tasks(p: Problems, node: Any, specs: dict[str, DataSpec], plain: dict) -> dict[str, dict]:
    if not isinstance(node, dict) or not node:
        p.add("tasks", "no tasks are declared", node, fix="choose a task set (tasks=shapes) or declare tasks.<name>")
        return {}
    node = plain["tasks"] = expand_patterns(p, node, specs)
    out = {}
    for name, tnode in node.items():
        n0 = len(p.items)
        if not _usable_task_name(str(name)):
            p.add(
                f"tasks.{name}",
                "this task name cannot be used: it is empty, contains '.' or '/', or "
                "is the name of an attribute of torch modules (heads are kept in a ModuleDict by task name)",
                str(name),
                fix=f"rename the task, e.g. tasks.{name}_task (keep tasks.<name>.target pointing at the data's target)",
            )
            continue
        t = check_schema(p, f"tasks.{name}", tnode, TaskConfig)
        if not isinstance(tnode, dict) or t.get("enabled") is False:
            continue  # not a mapping: reported by check_schema
        if any(q.key == f"tasks.{name}.kind" for q in p.items[n0:]) or f"tasks.{name}.kind" in p.unset:
            continue  # a bad or unset kind is reported already; nothing more can be checked
        resolved = _resolve_task(p, str(name), t, specs, plain, tnode)
        if resolved is not None:
            out[str(name)] = resolved
    enabled = [n for n, t in node.items() if not (isinstance(t, dict) and t.get("enabled") is False)]
    if not enabled:
        p.add(
            "tasks", "every task is disabled", sorted(node), fix="set tasks.<name>.enabled=true for at least one task"
        )
    elif out and all(t["role"] == "auxiliary" for t in out.values()):
        p.add("tasks.*.role", "every enabled task is auxiliary", fix="make at least one task role=primary")
    return out


def expand_patterns(p: Problems, node: dict, specs: dict[str, DataSpec]) -> dict:
    """Tasks whose ``target`` is a pattern (``*``, ``?``, ``[...]``, as in fnmatch) become one task
    per matching target of their dataset, named by the target and with every other key of the
    pattern's task; a target that a task of its own name declares already is left to it. A pattern
    that matches nothing is refused, listing the data's targets."""
    out: dict = {}
    for name, t in node.items():
        target = t.get("target") if isinstance(t, dict) else None
        if not isinstance(target, str) or not any(ch in target for ch in "*?["):
            out[name] = t
            continue
        spec = specs.get(t.get("dataset") or PRIMARY)
        if spec is None:
            out[name] = t  # the dataset is reported (unknown, or its source failed)
            continue
        matches = [k for k in spec.targets if fnmatch.fnmatchcase(k, target) and k not in node]
        if not matches:
            p.add(
                f"tasks.{name}.target",
                "the pattern matches no target of the data (that no task declares already)",
                target,
                allowed=", ".join(spec.targets),
                fix=f"set tasks.{name}.target to a pattern such as '*' or 'y_*', or to one target",
            )
        for k in matches:
            out[k] = {**t, "target": k}
    return out


def _usable_task_name(name: str) -> bool:
    """Task names key nn.ModuleDicts and metric names: no '.' or '/', and no torch module attribute."""
    import torch

    return bool(name) and "." not in name and "/" not in name and not hasattr(torch.nn.ModuleDict(), name)


def _resolve_task(
    p: Problems, name: str, t: dict, specs: dict[str, DataSpec], plain: dict, raw: dict | None = None
) -> dict | None:
    key = f"tasks.{name}"
    n0 = len(p.items)
    if t["kind"] is None:
        p.add(
            f"{key}.kind",
            "required key is missing",
            allowed=", ".join(TASK_KINDS.names()),
            fix=f"set {key}.kind=<kind> (or +{key}.kind=<kind> for a new task)",
        )
        return None
    if t["kind"] not in TASK_KINDS:
        p.add(
            f"{key}.kind",
            "unknown task kind",
            t["kind"],
            allowed=", ".join(TASK_KINDS.names()),
            fix=f"set {key}.kind to one of the allowed kinds",
        )
        return None
    kind = TASK_KINDS.get(t["kind"])()
    t["target"] = t["target"] if t["target"] is not None else name
    t["dataset"] = t["dataset"] if t["dataset"] is not None else PRIMARY
    known = [PRIMARY, *(plain.get("datasets") or {})]
    if t["dataset"] not in known:
        p.add(
            f"{key}.dataset",
            "no such dataset",
            t["dataset"],
            allowed=", ".join(known),
            fix=f"set {key}.dataset to null (the `data` source) or declare datasets.{t['dataset']}",
        )
    spec = specs.get(t["dataset"])
    if spec is not None:
        _resolve_io(p, key, t, kind, spec, _data_node(plain, t["dataset"]), raw or {})
        t["input_key"] = qualify(t["dataset"], t["input"]) if t["input"] is not None else None
        t["target_key"] = qualify(t["dataset"], t["target"])
    t["loss"] = t["loss"] if t["loss"] is not None else kind.default_loss
    if t["loss"] not in kind.losses:
        p.add(
            f"{key}.loss",
            f"not a loss of a {kind.name} task",
            t["loss"],
            allowed=", ".join(kind.losses),
            fix=f"set {key}.loss to an allowed loss (or null for {kind.default_loss})",
        )
    t["metrics"] = list(t["metrics"]) if t["metrics"] is not None else list(kind.default_metrics)
    if not t["metrics"]:
        p.add(
            f"{key}.metrics",
            "empty list: a task needs at least one metric",
            [],
            allowed=", ".join(kind.metrics),
            fix=f"list some metrics, or set {key}.metrics=null for the defaults ({', '.join(kind.default_metrics)})",
        )
        t["metrics"] = list(kind.default_metrics)
    for m in t["metrics"]:
        if m not in kind.metrics:
            p.add(
                f"{key}.metrics",
                f"not a metric of a {kind.name} task",
                m,
                allowed=", ".join(kind.metrics),
                fix=f"remove {m!r} from {key}.metrics",
            )
    if t["primary_metric"] is None:
        t["primary_metric"] = kind.default_primary if kind.default_primary in t["metrics"] else t["metrics"][0]
    if t["primary_metric"] not in t["metrics"]:
        p.add(
            f"{key}.primary_metric",
            "must be one of the task's metrics",
            t["primary_metric"],
            allowed=", ".join(t["metrics"]),
            fix=f"add it to {key}.metrics or choose another",
        )
    t["directions"] = {m: kind.metrics[m].direction for m in t["metrics"] if m in kind.metrics}
    _resolve_head(p, key, t, kind, plain)
    return t if len(p.items) == n0 else None


def _data_node(plain: dict, dataset: str) -> dict:
    """The config node of ``dataset`` (``data`` or ``datasets.<name>``), {} when not a mapping."""
    node = plain.get("data") if dataset == PRIMARY else (plain.get("datasets") or {}).get(dataset)
    return node if isinstance(node, dict) else {}


def _setting(raw: dict, key: str, field: str, value: str) -> str:
    """How to set ``key.field`` on the command line: ``+`` for a task declared there (its node has
    no such key yet: ``tasks.X.num_classes=3`` would fail with "no such key")."""
    return f"{'' if field in raw else '+'}{key}.{field}={value}"


def _resolve_io(p: Problems, key: str, t: dict, kind, spec: DataSpec, data_node: dict, raw: dict) -> None:
    if t["target"] not in spec.targets:
        p.add(
            f"{key}.target",
            "the data has no such target",
            t["target"],
            allowed=", ".join(spec.targets),
            fix=f"set {key}.target to one of the data's targets, or choose other data",
        )
        return
    ts = spec.targets[t["target"]]
    if ts.kind not in kind.accepts:
        fix = f"set {key}.kind to an allowed kind"
        if "kinds" in data_node:  # a source that infers target kinds from the values (csv, image_manifest)
            where = "data" if t["dataset"] == PRIMARY else f"datasets.{t['dataset']}"
            fix += (
                f"; or, if the data inferred the target's kind wrongly (class labels written as numbers), "
                f"declare it: ++{where}.kinds.{t['target']}={kind.accepts[0]}"
            )
        p.add(
            f"{key}.kind",
            f"a {kind.name} task cannot learn target {ts.name!r}, which is {ts.kind}",
            kind.name,
            allowed=", ".join(k for k in TASK_KINDS.names() if ts.kind in TASK_KINDS.get(k).accepts),
            fix=fix,
        )
    if t["input"] is None:
        if len(spec.inputs) == 1:
            t["input"] = next(iter(spec.inputs))
        else:
            p.add(
                f"{key}.input",
                "the data has several inputs; say which one this task reads",
                None,
                allowed=", ".join(spec.inputs),
                fix=f"set {key}.input",
            )
    elif t["input"] not in spec.inputs:
        p.add(
            f"{key}.input",
            "the data has no such input",
            t["input"],
            allowed=", ".join(spec.inputs),
            fix=f"set {key}.input to one of the data's inputs",
        )
    if ts.num_classes is not None:
        if t["num_classes"] is not None and t["num_classes"] != ts.num_classes:
            p.add(
                f"{key}.num_classes",
                f"the data's target {ts.name!r} has {ts.num_classes} classes",
                t["num_classes"],
                fix=f"remove {key}.num_classes or set it to {ts.num_classes}",
            )
        t["num_classes"] = ts.num_classes
    elif t["num_classes"] is None and kind.needs_num_classes:
        p.add(
            f"{key}.num_classes",
            "the data does not say how many classes; set it",
            fix=f"set {_setting(raw, key, 'num_classes', '<n>')}",
        )
    if kind.needs_num_classes and t["num_classes"] is not None and t["num_classes"] < 2:
        p.add(
            f"{key}.num_classes",
            f"a {kind.name} task needs at least two classes (labels)"
            + (f" (the data's target {ts.name!r} has {ts.num_classes})" if ts.num_classes is not None else ""),
            t["num_classes"],
            allowed="2 or more",
            fix="give the target two or more classes in the data, or remove the task",
        )
    if t["ignore_index"] is None:
        t["ignore_index"] = ts.ignore_index


def _resolve_head(p: Problems, key: str, t: dict, kind, plain: dict) -> None:
    head = t["head"] if t["head"] is not None else (plain.get("head") or {}).get("dense" if kind.dense else "vector")
    cls = (
        check_component(p, f"{key}.head", head, HEADS)
        if t["head"] is not None
        else (HEADS.get(head["name"]) if isinstance(head, dict) and head.get("name") in HEADS else None)
    )
    t["head"] = head
    if cls is None:
        return
    if kind.dense and not cls.dense_output:
        p.add(
            f"{key}.head",
            f"a {kind.name} task needs a dense (per-pixel) head",
            head["name"],
            allowed=", ".join(n for n in HEADS.names() if HEADS.get(n).dense_output),
            fix=f"set {key}.head.name or head.dense.name to a dense head",
        )
    if not kind.dense and cls.dense_output:
        p.add(
            f"{key}.head",
            f"a {kind.name} task needs a vector head, not a dense one",
            head["name"],
            allowed=", ".join(n for n in HEADS.names() if not HEADS.get(n).dense_output),
            fix=f"set {key}.head.name or head.vector.name to a vector head",
        )
    bb = plain.get("backbone") or {}
    if cls.needs_feature_map and bb.get("name") in BACKBONES and not BACKBONES.get(bb["name"]).feature_map:
        p.add(
            f"{key}.head",
            f"head {head['name']} needs a spatial feature map, but backbone {bb['name']} gives vectors",
            head["name"],
            fix="choose a convolutional backbone or disable this task",
        )
