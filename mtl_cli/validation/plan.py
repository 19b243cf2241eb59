"""``validate(cfg)``: every check at once, before anything is built or written.

It returns a :class:`Plan`: the plain config with defaults filled in, the data sources
(constructed, nothing loaded) with their :class:`DataSpec`, and the resolved tasks. It raises
:class:`ConfigError` listing each problem with its key, the bad value, what is allowed and the
fix. Generic: component keys and their value domains come from class signatures, task rules from
the task kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ..config.checks import Problems, check_component, check_missing, check_schema
from ..config.schema import OPTIONAL_SECTIONS, SECTIONS, LoggerConfig, RootConfig, TrainerConfig
from ..data.base import PRIMARY, DataSource, DataSpec
from ..errors import ConfigError, Problem
from ..registry import ARCHS, BACKBONES, HEADS, WEIGHTINGS
from .data import check_datasets, merge_specs
from .model import check_arch
from .optim import check_allowed_targets, check_optimizer, check_scheduler
from .run import check_baseline, check_device, check_monitor, check_objectives, check_processes, check_tensorboard
from .tasks import check_tasks


@dataclass
class Plan:
    cfg: dict  # plain, resolved, with defaults filled in
    source: DataSource | None  # the `data` source
    spec: DataSpec | None  # inputs and targets of every dataset, by qualified name
    tasks: dict[str, dict] = field(default_factory=dict)  # enabled tasks, fully resolved
    sources: dict[str, DataSource] = field(default_factory=dict)  # every dataset: "data" and `datasets`
    specs: dict[str, DataSpec] = field(default_factory=dict)  # each dataset's own spec (own names)
    warnings: list[str] = field(default_factory=list)  # accepted, but worth saying (logged when the run starts)

    @property
    def trainer(self) -> TrainerConfig:
        """The trainer settings, typed (``cfg["trainer"]`` with its defaults)."""
        return TrainerConfig(**self.cfg["trainer"])

    @property
    def logger(self) -> LoggerConfig:
        """The logger settings, typed (``cfg["logger"]`` with its defaults)."""
        return LoggerConfig(**self.cfg["logger"])

    def used_datasets(self) -> list[str]:
        """Datasets that enabled tasks read, in task order."""
        return list(dict.fromkeys(t["dataset"] for t in self.tasks.values()))


def validate(cfg: DictConfig | dict, training: bool = True) -> Plan:
    """Every check of ``cfg`` at once (ConfigError listing the problems). ``training=False`` (a
    finished run's config, read for evaluation or prediction) skips the optimizer and the
    scheduler: nothing of them is imported, let alone called."""
    p = Problems()
    if isinstance(cfg, DictConfig):
        try:
            plain: dict[str, Any] = cast(dict, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
        except Exception as e:  # noqa: BLE001 - interpolation errors from OmegaConf
            raise ConfigError(
                [Problem("config", f"cannot resolve the config: {e}", fix="fix the interpolation")]
            ) from e
    else:
        plain = dict(cfg)
    plain.pop("hydra", None)
    check_missing(p, plain)

    root_node = {k: v for k, v in plain.items() if k not in SECTIONS and k not in OPTIONAL_SECTIONS}
    root = check_schema(p, "", root_node, RootConfig)
    for s in SECTIONS:
        if s not in plain:
            p.add(s, "section is missing", fix=f"add `{s}` to the config or choose a {s}= option")
    plain.update(root)
    plain["trainer"] = check_schema(p, "trainer", plain.get("trainer", {}), TrainerConfig)
    plain["logger"] = check_schema(p, "logger", plain.get("logger", {}), LoggerConfig)
    check_tensorboard(p, plain["logger"])
    check_component(p, "backbone", plain.get("backbone"), BACKBONES)
    arch_cls = check_component(p, "arch", plain.get("arch"), ARCHS)
    head = plain.get("head") or {}
    for slot in ("vector", "dense"):
        if slot not in head:
            p.add(f"head.{slot}", "missing", fix=f"set head.{slot}.name (one of {', '.join(HEADS.names())})")
        else:
            check_component(p, f"head.{slot}", head[slot], HEADS)
    n0 = len(p.items)
    weighting_cls = check_component(p, "weighting", plain.get("weighting"), WEIGHTINGS)
    weighting_ok = weighting_cls is not None and len(p.items) == n0
    allowed = check_allowed_targets(p, plain["allowed_targets"])  # module prefixes a _target_ may name
    optimizer = check_optimizer(p, plain["optimizer"], allowed) if training and "optimizer" in plain else None
    if training and "scheduler" in plain:
        check_scheduler(p, plain["scheduler"], optimizer, allowed)
    check_device(p, plain)
    check_processes(p, plain)

    sources, specs = check_datasets(p, plain)
    spec = merge_specs(specs)
    tasks = check_tasks(p, plain.get("tasks"), specs, plain)
    if arch_cls is not None and tasks:
        check_arch(p, arch_cls, plain, tasks, spec)
    notes = []
    if weighting_ok and arch_cls is not None and tasks:
        p.items.extend(weighting_cls.check(plain["weighting"], arch_cls, list(tasks)))
        notes += weighting_notes(plain["weighting"], weighting_cls, tasks)
    check_monitor(p, plain["trainer"].get("monitor"), tasks)
    check_objectives(p, plain.get("objectives"), tasks)
    check_baseline(p, plain, tasks)
    if p.items:
        raise ConfigError(p.report())
    return Plan(plain, sources.get(PRIMARY), spec, tasks, sources, specs, notes)


def weighting_notes(node: dict, cls: type, tasks: dict[str, dict]) -> list[str]:
    """Warnings about the weighting: static task weights that the method ignores."""
    weighted = {n: t["weight"] for n, t in tasks.items() if t["weight"] != 1.0}
    if weighted and cls.ignores_task_weights(node):
        shown = ", ".join(f"tasks.{n}.weight={w:g}" for n, w in weighted.items())
        return [
            f"{shown}: weighting={node['name']} does not depend on a constant scale of a task's loss, so task "
            "weights do not change the balance between tasks (they pre-scale each loss before the method); "
            "use a method that honours them (e.g. weighting=static) or leave them at 1"
        ]
    return []
