"""Validate a composed config before anything is built, reporting every problem at once.

``validate(cfg)`` returns a :class:`Plan`: the plain config with defaults filled in, the data
source (constructed, but nothing loaded) with its :class:`DataSpec`, and the resolved tasks. It
raises :class:`ConfigError` listing each problem with its key, the bad value, what is allowed and
the fix. Generic: component keys come from class signatures, task rules from the task kinds.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..data.base import DataSource, DataSpec
from ..errors import ConfigError, Problem, UserError
from ..registry import ARCHS, BACKBONES, HEADS, SOURCES, TASK_KINDS, WEIGHTINGS, Registry
from .schema import OPTIONAL_SECTIONS, SECTIONS, LoggerConfig, RootConfig, TaskConfig, TrainerConfig
from .targets import import_target, is_dotted_path
from .typecheck import all_params, config_params, matches, type_name

RESERVED_SCHEDULER_KEYS = ("warmup_steps", "warmup_start_factor", "interval")


#: the dataset name of the `data` node; the others are named under `datasets`
PRIMARY = "data"


def qualify(dataset: str, key: str) -> str:
    """The model-wide name of input or target ``key`` of ``dataset``: unchanged for the primary
    dataset, ``<dataset>/<key>`` for the others (two datasets may both have an ``image``)."""
    return key if dataset == PRIMARY else f"{dataset}/{key}"


@dataclass
class Plan:
    cfg: dict  # plain, resolved, with defaults filled in
    source: DataSource | None  # the `data` source
    spec: DataSpec | None  # inputs and targets of every dataset, by qualified name
    tasks: dict[str, dict] = field(default_factory=dict)  # enabled tasks, fully resolved
    sources: dict[str, DataSource] = field(default_factory=dict)  # every dataset: "data" and `datasets`
    specs: dict[str, DataSpec] = field(default_factory=dict)  # each dataset's own spec (own names)

    def used_datasets(self) -> list[str]:
        """Datasets that enabled tasks read, in task order."""
        return list(dict.fromkeys(t["dataset"] for t in self.tasks.values()))


def _a(type_text: str) -> str:
    """``integer`` -> ``an integer``; ``true/false`` -> ``true or false`` (for fix hints)."""
    if type_text == "true/false":
        return "true or false"
    if type_text.startswith("null"):
        return type_text
    return ("an " if type_text[:1] in "aeiou" else "a ") + type_text


def _join(where: str, key: str) -> str:
    """Dotted key; the root section has no prefix (``seed``, not ``<root>.seed``)."""
    return f"{where}.{key}" if where else str(key)


class Problems:
    def __init__(self):
        self.items: list[Problem] = []
        self.unset: set[str] = set()  # keys left at ??? (reported once, not again as a bad value)

    def add(self, key, message, value=None, allowed=None, fix=None):
        self.items.append(Problem(key, message, value, allowed, fix))

    def report(self) -> list[Problem]:
        """The problems to show: a ??? value is reported once as unset, not again as a bad value."""
        return [q for q in self.items if not (q.key in self.unset and isinstance(q.value, str) and q.value == "???")]


def _check_keys(p: Problems, where: str, node: dict, params: dict[str, tuple[Any, Any]], skip=("name",)):
    for k, v in node.items():
        if k in skip:
            continue
        if k not in params:
            p.add(
                f"{where}.{k}",
                "unknown key",
                allowed=", ".join(sorted(params)) or "(no keys)",
                fix=f"remove {where}.{k} or use one of the allowed keys",
            )
            continue
        tp, _ = params[k]
        if not matches(v, tp):
            p.add(
                f"{where}.{k}",
                f"wrong type: expected {type_name(tp)}",
                v,
                fix=f"set {where}.{k} to {_a(type_name(tp))}",
            )
    for k, (tp, default) in params.items():
        if default is inspect.Parameter.empty:
            if k not in node:
                p.add(f"{where}.{k}", "required key is missing", fix=f"set {where}.{k}=<{type_name(tp)}>")


def _check_schema(p: Problems, where: str, node: Any, schema: type) -> dict:
    """Check ``node`` against a dataclass schema; return it with defaults filled in.

    ``where`` is the key prefix ("" for the root). A value with a problem is reported and then
    replaced by the field's default in the result, so that later checks neither crash on it nor
    report it a second time (the config is rejected anyway).
    """
    if not isinstance(node, dict):
        p.add(where, "expected a mapping", node, fix=f"set {where} to a mapping of keys to values")
        return {f.name: f.default for f in dataclasses.fields(schema)}
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    out = {}
    for k in node:
        if k not in fields:
            key = _join(where, k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f", or did you mean {_join(where, close[0])}?" if close else " or fix its spelling"
            p.add(key, "unknown key", allowed=", ".join(fields), fix=f"remove {key}{hint}")
    for name, f in fields.items():
        key = _join(where, name)
        v = node.get(name, f.default)
        out[name] = v
        if not matches(v, hints[name]):
            p.add(
                key,
                f"wrong type: expected {type_name(hints[name])}",
                v,
                allowed=f.metadata.get("allowed"),
                fix=f"set {key} to {_a(type_name(hints[name]))}",
            )
            out[name] = f.default
            continue
        check = f.metadata.get("check")
        if check is not None and v is not None and not check(v):
            p.add(
                key,
                "value out of range",
                v,
                allowed=f.metadata.get("allowed"),
                fix=f"set {key} to {f.metadata.get('allowed')}",
            )
            out[name] = f.default
    return out


def _check_component(p: Problems, where: str, node: Any, registry: Registry):
    """Check a ``{name: ..., <keys>}`` node against the registered class; return the class."""
    if not isinstance(node, dict) or "name" not in node:
        p.add(
            where,
            f"expected a mapping with a 'name' key naming a {registry.kind}",
            node,
            allowed=", ".join(registry.names()),
            fix=f"choose one with {where.split('.')[0]}=<option>",
        )
        return None
    name = node["name"]
    if name not in registry:
        p.add(
            f"{where}.name",
            f"unknown {registry.kind}",
            name,
            allowed=", ".join(registry.names()),
            fix=f"set {where}.name to one of the allowed names",
        )
        return None
    cls = registry.get(name)
    _check_keys(p, where, node, config_params(cls.__init__))
    return cls


def _check_allowed_targets(p: Problems, value: Any) -> tuple[str, ...]:
    """Each ``allowed_targets`` entry must be a dotted module path; return the well-formed ones.
    (Its type, a list of strings or null, is checked by the root schema.)"""
    if not isinstance(value, (list, tuple)):
        return ()
    for i, v in enumerate(value):
        if not is_dotted_path(v):
            p.add(
                f"allowed_targets[{i}]",
                "not a dotted module path",
                v,
                allowed="module paths of Python names, such as mypkg.optim",
                fix="write the module prefix whose callables a _target_ may name, e.g. +allowed_targets=[mypkg.optim]",
            )
    return tuple(v for v in value if is_dotted_path(v))


def _check_target(
    p: Problems,
    where: str,
    node: Any,
    skip: tuple[str, ...],
    extra: tuple[str, ...] = (),
    allowed: tuple[str, ...] = (),
):
    """Import ``node._target_`` (only from an allowed module prefix: the defaults and ``allowed``)
    and check the node's keys against its signature; return it, or None after a problem."""
    if not isinstance(node, dict):
        p.add(where, "expected a mapping with _target_", node)
        return None
    target = node.get("_target_")
    if target is None:
        return None
    try:
        fn = import_target(target, allowed, key=f"{where}._target_")
    except ConfigError as e:  # not allowed: nothing was imported
        p.items.extend(e.problems)
        return None
    except (ImportError, AttributeError, ValueError):
        p.add(
            f"{where}._target_",
            "cannot import",
            target,
            allowed="a dotted path such as torch.optim.AdamW",
            fix="fix the spelling of the class path",
        )
        return None
    params = all_params(fn, skip=skip)
    if params is not None:
        keys = {k: v for k, v in node.items() if not k.startswith("_") and k not in extra}
        for k in keys:
            if k not in params:
                p.add(
                    f"{where}.{k}",
                    f"unknown argument of {target}",
                    allowed=", ".join(sorted(params)),
                    fix=f"remove {where}.{k}",
                )
    return fn


def _check_optimizer(p: Problems, node: dict, allowed: tuple[str, ...] = ()):
    """Check the optimizer node; return a dummy instance (on one parameter) when it is valid."""
    n0 = len(p.items)
    fn = _check_target(p, "optimizer", node, skip=("params",), allowed=allowed)
    if fn is None:
        if isinstance(node, dict) and node.get("_target_") is None:
            p.add("optimizer._target_", "missing", fix="choose optimizer=adamw|adam|sgd or set optimizer._target_")
        return None
    lr = node.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
        p.add(
            "optimizer.lr",
            "learning rate must be a number > 0",
            lr,
            allowed="a number > 0",
            fix="e.g. optimizer.lr=1e-3",
        )
        return None
    if len(p.items) > n0:  # unknown arguments: already reported, torch would only repeat them
        return None
    import torch

    kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
    try:  # let torch judge the remaining values, on a dummy parameter
        return fn([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except Exception as e:  # noqa: BLE001 - any refusal of the arguments is a config problem
        p.add("optimizer", f"{node['_target_']} refuses these arguments: {e}", kwargs, fix="fix the named value")
    return None


def _check_scheduler(p: Problems, node: dict, optimizer=None, allowed: tuple[str, ...] = ()) -> None:
    n0 = len(p.items)
    fn = _check_target(p, "scheduler", node, skip=("optimizer",), extra=RESERVED_SCHEDULER_KEYS, allowed=allowed)
    if not isinstance(node, dict):
        return
    w = node.get("warmup_steps", 0)
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        p.add(
            "scheduler.warmup_steps",
            "expected an integer >= 0",
            w,
            allowed="an integer >= 0",
            fix="e.g. scheduler.warmup_steps=100 (0: no warmup)",
        )
    elif w > 0:
        f = node.get("warmup_start_factor", 0.01)
        if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
            p.add(
                "scheduler.warmup_start_factor",
                "expected a number in (0, 1]",
                f,
                allowed="0 < factor <= 1",
                fix="e.g. scheduler.warmup_start_factor=0.01 (the warmup starts at factor x lr)",
            )
    if node.get("interval", "step") not in ("step", "epoch"):
        p.add(
            "scheduler.interval",
            "unknown interval",
            node.get("interval"),
            allowed="step, epoch",
            fix="set scheduler.interval=step (per optimizer step) or epoch",
        )
    if fn is None or len(p.items) > n0:
        return
    _dry_run_scheduler(p, node, fn, optimizer)


def _dry_run_scheduler(p: Problems, node: dict, fn, optimizer) -> None:
    """Build the scheduler on a dummy optimizer and take a few steps: torch checks most values only
    when it computes a learning rate, which would otherwise happen mid-run."""
    import torch

    if optimizer is None:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    kwargs = {k: v for k, v in node.items() if not k.startswith("_") and k not in RESERVED_SCHEDULER_KEYS}
    kwargs = {k: (100 if v == "auto" else v) for k, v in kwargs.items()}  # as build_scheduler resolves it
    target = node["_target_"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            sched = fn(optimizer, **kwargs)
            lrs = [g["lr"] for g in optimizer.param_groups]
            for _ in range(3):
                sched.step()
                lrs += [g["lr"] for g in optimizer.param_groups]
    except Exception as e:  # noqa: BLE001 - any refusal of the arguments is a config problem
        p.add(
            "scheduler", f"{target} refuses these arguments: {type(e).__name__}: {e}", kwargs, fix="fix the named value"
        )
        return
    bad = [lr for lr in lrs if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0)]
    if bad:
        p.add(
            "scheduler",
            f"{target} gives an invalid learning rate",
            bad[0],
            allowed="finite learning rates >= 0",
            fix="check the scheduler's values (e.g. max_lr, eta_min)",
        )


def validate(cfg: DictConfig | dict) -> Plan:
    p = Problems()
    if isinstance(cfg, DictConfig):
        try:
            plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
        except Exception as e:  # noqa: BLE001 - interpolation errors from OmegaConf
            raise ConfigError(
                [Problem("config", f"cannot resolve the config: {e}", fix="fix the interpolation")]
            ) from e
    else:
        plain = dict(cfg)
    plain.pop("hydra", None)
    _check_missing(p, plain)

    root_node = {k: v for k, v in plain.items() if k not in SECTIONS and k not in OPTIONAL_SECTIONS}
    root = _check_schema(p, "", root_node, RootConfig)
    for s in SECTIONS:
        if s not in plain:
            p.add(s, "section is missing", fix=f"add `{s}` to the config or choose a {s}= option")
    plain.update(root)
    plain["trainer"] = _check_schema(p, "trainer", plain.get("trainer", {}), TrainerConfig)
    plain["logger"] = _check_schema(p, "logger", plain.get("logger", {}), LoggerConfig)
    _check_tensorboard(p, plain["logger"])
    _check_component(p, "backbone", plain.get("backbone"), BACKBONES)
    arch_cls = _check_component(p, "arch", plain.get("arch"), ARCHS)
    head = plain.get("head") or {}
    for slot in ("vector", "dense"):
        if slot not in head:
            p.add(f"head.{slot}", "missing", fix=f"set head.{slot}.name (one of {', '.join(HEADS.names())})")
        else:
            _check_component(p, f"head.{slot}", head[slot], HEADS)
    weighting_cls = _check_component(p, "weighting", plain.get("weighting"), WEIGHTINGS)
    if weighting_cls is not None and arch_cls is not None:
        p.items.extend(weighting_cls.check(plain["weighting"], arch_cls))
    allowed = _check_allowed_targets(p, plain["allowed_targets"])  # module prefixes a _target_ may name
    optimizer = _check_optimizer(p, plain["optimizer"], allowed) if "optimizer" in plain else None
    if "scheduler" in plain:
        _check_scheduler(p, plain["scheduler"], optimizer, allowed)
    _check_device(p, plain)

    sources, specs = _check_datasets(p, plain)
    spec = _merge_specs(specs)
    tasks = _check_tasks(p, plain.get("tasks"), specs, plain)
    if arch_cls is not None and tasks:
        _check_arch(p, arch_cls, plain, tasks, spec)
    _check_monitor(p, plain["trainer"].get("monitor"), tasks)
    _check_objectives(p, plain.get("objectives"), tasks)
    _check_baseline(p, plain, tasks)
    if p.items:
        raise ConfigError(p.report())
    return Plan(plain, sources.get(PRIMARY), spec, tasks, sources, specs)


def _check_arch(p: Problems, arch_cls, plain: dict, tasks: dict[str, dict], spec: DataSpec | None) -> None:
    """Rules between the architecture, the backbone and the tasks' inputs; then the arch's own check."""
    from ..models.base import ArchInfo

    arch = plain["arch"]["name"]
    if any(t.get("input_key") is None for t in tasks.values()):
        return  # a dataset or input problem is reported already
    input_keys = list(dict.fromkeys(t["input_key"] for t in tasks.values()))
    if arch_cls.single_input and len(input_keys) > 1:
        where = sorted({f"{t['dataset']}:{t['input']}" for t in tasks.values()})
        p.add(
            "tasks.*.input",
            f"arch={arch} feeds every task from one shared input, but the tasks read several inputs (dataset:input)",
            where,
            allowed=", ".join(n for n in ARCHS.names() if not ARCHS.get(n).single_input),
            fix="give every task the same dataset and input, or choose a multi-input architecture (arch=multi_input)",
        )
        return
    bb = plain.get("backbone") or {}
    bb_cls = BACKBONES.get(bb["name"]) if bb.get("name") in BACKBONES else None
    if bb_cls is None or spec is None:
        return
    if arch_cls.single_input:
        modality = spec.inputs[input_keys[0]].modality
        if modality not in bb_cls.modalities:
            p.add(
                "backbone.name",
                f"backbone {bb['name']} reads {', '.join(bb_cls.modalities)} inputs, but the tasks "
                f"read {input_keys[0]!r}, a {modality} input",
                bb["name"],
                allowed=", ".join(n for n in BACKBONES.names() if modality in BACKBONES.get(n).modalities),
                fix="choose one of the allowed backbones",
            )
            return
    stages = None
    if arch_cls.needs_stages:
        if not bb_cls.has_stages:
            p.add(
                "backbone.name",
                f"arch={arch} works stage by stage, but backbone {bb['name']} cannot be cut into stages",
                bb["name"],
                allowed=", ".join(n for n in BACKBONES.names() if BACKBONES.get(n).has_stages),
                fix="choose one of the allowed backbones, or arch=hps",
            )
            return
        stages = _stage_names(p, bb_cls, bb, spec.inputs[input_keys[0]])
        if stages is None:
            return
    info = ArchInfo(
        task_names=list(tasks), backbone=bb["name"], stages=stages, inputs={k: spec.inputs[k] for k in input_keys}
    )
    p.items.extend(arch_cls.check(plain["arch"], info))


def _stage_names(p: Problems, bb_cls, node: dict, input_spec) -> list[str] | None:
    """Build the backbone once on the tasks' input and read its stage names (None on a problem)."""
    try:
        return [n for n, _ in bb_cls(input_spec, **{k: v for k, v in node.items() if k != "name"}).stages()]
    except UserError as e:
        p.items.extend(e.problems)
    except Exception as e:  # noqa: BLE001 - any failure to build is a config problem here
        p.add(
            "backbone",
            f"backbone {node['name']} cannot be built on input {input_spec.name!r} "
            f"of shape {tuple(input_spec.shape)}: {type(e).__name__}: {e}",
            fix="fix the backbone's keys",
        )
    return None


def _check_datasets(p: Problems, plain: dict) -> tuple[dict[str, DataSource], dict[str, DataSpec]]:
    """The `data` source and every source under `datasets`, each described (nothing loaded)."""
    sources, specs = {}, {}
    nodes = {PRIMARY: plain.get("data")}
    extra = plain.get("datasets") or {}
    if not isinstance(extra, dict):
        p.add(
            "datasets",
            "expected a mapping of dataset names to data sources",
            extra,
            fix="e.g. in an experiment's defaults: `- /data@datasets.audio: tones`",
        )
        extra = {}
    for name, node in extra.items():
        if name == PRIMARY or "/" in str(name):
            p.add(
                f"datasets.{name}",
                "reserved or invalid dataset name",
                name,
                allowed="a name other than 'data', without '/'",
                fix="rename the dataset",
            )
            continue
        nodes[str(name)] = node
    plain["datasets"] = extra
    for name, node in nodes.items():
        src, spec = _check_data(p, "data" if name == PRIMARY else f"datasets.{name}", node)
        if src is not None:
            sources[name], specs[name] = src, spec
    return sources, specs


def _merge_specs(specs: dict[str, DataSpec]) -> DataSpec | None:
    """One spec over every dataset, inputs and targets under their qualified names."""
    if PRIMARY not in specs and not specs:
        return None
    inputs, targets = {}, {}
    artifacts = dict(specs[PRIMARY].artifacts) if PRIMARY in specs else {}
    for d, spec in specs.items():
        for k, v in spec.inputs.items():
            inputs[qualify(d, k)] = dataclasses.replace(v, name=qualify(d, k))
        for k, v in spec.targets.items():
            targets[qualify(d, k)] = dataclasses.replace(v, name=qualify(d, k))
        if d != PRIMARY and spec.artifacts:
            artifacts.setdefault("datasets", {})[d] = spec.artifacts
    return DataSpec(inputs, targets, artifacts)


def _check_missing(p: Problems, node: Any, prefix: str = "") -> None:
    """OmegaConf's ??? (mandatory value) left unset anywhere."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_missing(p, v, f"{prefix}.{k}" if prefix else str(k))
    elif node == "???":
        p.add(prefix, "mandatory value is not set", fix=f"set {prefix}=<value> on the command line or in the config")
        p.unset.add(prefix)


def _check_device(p: Problems, plain: dict) -> None:
    import torch

    dev = plain.get("device", "auto")
    if not isinstance(dev, str):
        return
    ok = dev == "auto" or dev == "cpu" or dev == "mps" or dev == "cuda" or dev.startswith("cuda:")
    if ok and dev.startswith("cuda:"):
        ok = dev[len("cuda:") :].isdigit()
    if not ok:
        p.add(
            "device",
            "unknown device",
            dev,
            allowed="auto, cpu, cuda, cuda:<i>, mps",
            fix="set device to one of the allowed values (auto picks cuda > mps > cpu)",
        )
        return
    if dev.startswith("cuda") and not torch.cuda.is_available():
        p.add("device", "CUDA is not available on this machine", dev, fix="use device=auto or device=cpu")
    elif dev.startswith("cuda:") and int(dev[len("cuda:") :]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        p.add(
            "device",
            f"this machine has {n} CUDA device{'s' if n != 1 else ''}",
            dev,
            allowed=", ".join(["cuda"] + [f"cuda:{i}" for i in range(n)]),
            fix="choose an existing device",
        )
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    if plain["trainer"].get("precision") == "fp16" and not cuda:
        p.add(
            "trainer.precision",
            "fp16 mixed precision needs a CUDA device",
            "fp16",
            allowed="32 or bf16 on this device",
            fix="use trainer.precision=bf16 or 32",
        )


def _check_data(p: Problems, where: str, node: Any) -> tuple[DataSource | None, DataSpec | None]:
    n_before = len(p.items)
    cls = _check_component(p, where, node, SOURCES)
    if cls is None or len(p.items) > n_before or any(k.startswith(f"{where}.") for k in p.unset):
        return None, None  # reported already (an unset ??? value would only confuse the source)

    def rekey(key: str | None) -> str:  # sources name their keys data.<key>
        if not key:
            return where
        return where + key[len("data") :] if key == "data" or key.startswith("data.") else key

    def retext(text):  # ... and their fixes say "set data.<key>=..."
        return re.sub(r"(?<![\w.])data\.", f"{where}.", text) if isinstance(text, str) else text

    try:
        source = cls(**{k: v for k, v in node.items() if k != "name"})
        return source, source.describe()
    except UserError as e:
        p.items.extend(
            Problem(rekey(q.key), retext(q.message), q.value, retext(q.allowed), retext(q.fix)) for q in e.problems
        )
    except (ValueError, TypeError) as e:
        p.add(where, f"the {node['name']} source refuses its arguments: {e}", fix="fix the named value")
    return None, None


def _check_tasks(p: Problems, node: Any, specs: dict[str, DataSpec], plain: dict) -> dict[str, dict]:
    if not isinstance(node, dict) or not node:
        p.add("tasks", "no tasks are declared", node, fix="choose a task set (tasks=shapes) or declare tasks.<name>")
        return {}
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
        t = _check_schema(p, f"tasks.{name}", tnode, TaskConfig)
        if not isinstance(tnode, dict) or t.get("enabled") is False:
            continue  # not a mapping: reported by _check_schema
        if any(q.key == f"tasks.{name}.kind" for q in p.items[n0:]) or f"tasks.{name}.kind" in p.unset:
            continue  # a bad or unset kind is reported already; nothing more can be checked
        resolved = _resolve_task(p, str(name), t, specs, plain)
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


def _usable_task_name(name: str) -> bool:
    """Task names key nn.ModuleDicts and metric names: no '.' or '/', and no torch module attribute."""
    import torch

    return bool(name) and "." not in name and "/" not in name and not hasattr(torch.nn.ModuleDict(), name)


def _resolve_task(p: Problems, name: str, t: dict, specs: dict[str, DataSpec], plain: dict) -> dict | None:
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
        _resolve_io(p, key, t, kind, spec)
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


def _resolve_io(p: Problems, key: str, t: dict, kind, spec: DataSpec) -> None:
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
        p.add(
            f"{key}.kind",
            f"a {kind.name} task cannot learn target {ts.name!r}, which is {ts.kind}",
            kind.name,
            allowed=", ".join(k for k in TASK_KINDS.names() if ts.kind in TASK_KINDS.get(k).accepts),
            fix=f"set {key}.kind to an allowed kind",
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
    elif t["num_classes"] is None and kind.name in ("classification", "multilabel", "segmentation"):
        p.add(f"{key}.num_classes", "the data does not say how many classes; set it", fix=f"set {key}.num_classes=<n>")
    if t["ignore_index"] is None:
        t["ignore_index"] = ts.ignore_index


def _resolve_head(p: Problems, key: str, t: dict, kind, plain: dict) -> None:
    head = t["head"] if t["head"] is not None else (plain.get("head") or {}).get("dense" if kind.dense else "vector")
    cls = (
        _check_component(p, f"{key}.head", head, HEADS)
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


def _check_monitor(p: Problems, monitor: Any, tasks: dict[str, dict]) -> None:
    if not isinstance(monitor, str) or monitor in ("mean_rel", "delta_m") or not tasks:
        return  # delta_m: _check_baseline
    allowed = ["mean_rel", "delta_m"] + [f"{n}/{m}" for n, t in tasks.items() for m in t["metrics"]]
    if monitor not in allowed:
        p.add(
            "trainer.monitor",
            "not a metric of an enabled task",
            monitor,
            allowed=", ".join(allowed),
            fix="set trainer.monitor to mean_rel, delta_m (with baseline_dir) or one of the allowed <task>/<metric>",
        )


def _check_tensorboard(p: Problems, logger: dict) -> None:
    """``logger.tensorboard=true`` needs the tensorboard package (an optional extra)."""
    import importlib.util

    if logger.get("tensorboard") is True and importlib.util.find_spec("tensorboard") is None:
        p.add(
            "logger.tensorboard",
            "TensorBoard event files need the tensorboard package, which is not installed",
            True,
            allowed="false, or true with tensorboard installed",
            fix='pip install "mtl-cli[tensorboard]" (or pip install tensorboard), or set logger.tensorboard=false',
        )


def _check_objectives(p: Problems, objectives: Any, tasks: dict[str, dict]) -> None:
    """``objectives`` (what a sweep optimizes): null, or distinct ``<task>/<metric>`` of enabled tasks."""
    if objectives is None or not isinstance(objectives, list) or not tasks:
        return  # not a list: the schema check reports it
    allowed = [f"{n}/{m}" for n, t in tasks.items() for m in t["metrics"]]
    if not objectives:
        p.add(
            "objectives",
            "an empty list",
            [],
            allowed="null (the selection score) or a list of <task>/<metric>",
            fix="set objectives=null, or list the val metrics to optimize, e.g. objectives=[shape/accuracy]",
        )
    for i, o in enumerate(objectives):
        if o not in allowed:
            p.add(
                f"objectives[{i}]",
                "not a metric of an enabled task",
                o,
                allowed=", ".join(allowed),
                fix="name each objective as <task>/<metric> of an enabled task",
            )
        elif objectives.index(o) != i:
            p.add(f"objectives[{i}]", "given twice", o, fix="list each objective once")


def _check_baseline(p: Problems, plain: dict, tasks: dict[str, dict]) -> None:
    """``baseline_dir`` must hold baselines.json covering every enabled primary task with its
    metrics; ``trainer.monitor=delta_m`` needs it. (``baseline=stl`` runs pick their own monitor
    and need no baselines.)"""
    from ..train.baselines import baseline_problems

    if plain.get("baseline") == "stl":
        return
    bdir = plain.get("baseline_dir")
    if plain["trainer"].get("monitor") == "delta_m" and bdir in (None, ""):
        p.add(
            "trainer.monitor",
            "delta_m selects by Δm against single-task baselines, but baseline_dir is not set",
            "delta_m",
            allowed="delta_m with baseline_dir=<a baseline=stl run>; mean_rel; <task>/<metric>",
            fix="train the baselines with mtl-train baseline=stl run_dir=<dir> <the same data/backbone/task "
            "overrides>, then add baseline_dir=<dir>; or choose another trainer.monitor",
        )
    if bdir not in (None, "") and tasks:
        p.items.extend(baseline_problems(bdir, tasks))


def component_problems(where: str, node: Any, registry: Registry) -> list[Problem]:
    """Problems of a ``{name: ..., keys}`` node nested in another component's config (for
    example a multi-input architecture's per-input stems), checked like a top-level one."""
    p = Problems()
    _check_component(p, where, node, registry)
    return p.items
