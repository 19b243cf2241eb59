"""Schemas of the config sections that are not registry components: their keys, types and value
domains (``Annotated``/``Literal``, see :mod:`.params`). Field metadata may hold ``allowed``, a
text that replaces the generated one in messages.

The defaults of ``trainer`` and ``logger`` are those of their built-in YAML files
(``conf/trainer/default.yaml``, ``conf/logger/default.yaml``), read once: the YAML is the one
place where a default is written, and a test checks that it lists exactly the schema's keys.
Registry components (data, backbone, arch, heads, weighting) are checked against their class
signatures instead; optimizer and scheduler against their ``_target_``'s signature.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml

from ..registry import Registry
from .locate import builtin_config_dir
from .params import Check, NonNeg, PosInt, Positive, Range, Seed

SAMPLING = ("round_robin", "proportional", "temperature", "all")
#: the most DataLoader worker processes a run may start (each is a process with a copy of the data)
MAX_WORKERS = max(8, 4 * (os.cpu_count() or 1))
NONFINITE = ("skip", "stop", "ignore")


def _f(default: Any = dataclasses.MISSING, allowed: str | None = None, help: str = ""):
    return field(default=default, metadata={"allowed": allowed, "help": help})


def yaml_defaults(rel: str):
    """Class decorator (under ``@dataclass``): each field's default from the built-in YAML file
    ``rel``; a field the file lacks, or a key the file has that the class lacks, is an error."""

    def deco(cls):
        data = yaml.safe_load((builtin_config_dir() / rel).read_text()) or {}
        names = list(cls.__annotations__)
        extra, missing = sorted(set(data) - set(names)), [n for n in names if n not in data]
        if extra or missing:
            raise RuntimeError(
                f"conf/{rel} and {cls.__name__} disagree: keys only in the file {extra}, only in the class {missing}"
            )
        for name in names:
            value = data[name]
            current = cls.__dict__.get(name)
            if isinstance(current, dataclasses.Field):
                current.default = value
            else:
                setattr(cls, name, value)
        return cls

    return deco


def _devices(v: Any) -> bool:
    return v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


def _workers(v: Any) -> bool:
    return v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_WORKERS)


def _epoch_length(v: Any) -> bool:
    return v in ("largest", "smallest") or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


@dataclass(frozen=True)
@yaml_defaults("trainer/default.yaml")
class TrainerConfig:
    max_epochs: PosInt = _f()
    max_steps: PosInt | None = _f()
    batch_size: PosInt = _f()
    eval_batch_size: PosInt | None = _f(allowed="null (2 x batch_size) or an integer >= 1")
    num_workers: Annotated[int | str, Check(_workers, f"auto or an integer >= 0 and <= {MAX_WORKERS}")] = _f(
        allowed=f"auto (from the CPU count; 0 for data in memory) or an integer >= 0 and <= {MAX_WORKERS} "
        "(4 per CPU core of this machine, at least 8)"
    )
    data_on_device: bool = _f()
    compile: bool = _f()
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = _f()
    compile_backend: Literal["inductor", "aot_eager", "eager"] = _f()
    channels_last: bool = _f()
    devices: Annotated[int | str, Check(_devices, "auto or a number of processes >= 1")] = _f(
        allowed="auto (the launcher's processes; 1 without one) or a number of processes >= 1 on this machine"
    )
    dist_backend: Literal["auto", "nccl", "gloo"] = _f()
    dist_timeout_s: Annotated[float, Range(gt=0)] = _f(allowed="a number of seconds > 0")
    sync_batchnorm: bool = _f()
    precision: Literal["32", "bf16", "fp16"] = _f(allowed="'32', 'bf16' or 'fp16' (fp16 needs CUDA)")
    accumulate_grad_batches: PosInt = _f()
    gradient_clip_val: Positive | None = _f()
    eval_every: PosInt = _f(allowed="an integer >= 1 (epochs)")
    limit_train_batches: PosInt | None = _f()
    limit_val_batches: PosInt | None = _f()
    limit_test_batches: PosInt | None = _f()
    monitor: str = _f(
        allowed="mean_rel, delta_m (Δm against baseline_dir's single-task baselines; needs baseline_dir), "
        "or <task>/<metric> (e.g. shape/accuracy)"
    )
    early_stopping: PosInt | None = _f(allowed="null (never stop early) or an integer >= 1 (evaluations)")
    early_stopping_min_delta: Annotated[float, Range(ge=0)] = _f(
        allowed="a number >= 0 (the rise of the monitored score that counts as an improvement)"
    )
    ema: Annotated[float, Range(gt=0, lt=1)] | None = _f(allowed="null (off) or a decay 0 < ema < 1 (e.g. 0.999)")
    ema_warmup: bool = _f()
    deterministic: bool = _f()
    progress: bool = _f()
    checkpoint_every: PosInt | None = _f(allowed="null (epoch ends only) or an integer >= 1 (optimizer steps)")
    save_top_k: Annotated[int, Range(ge=0)] = _f(allowed="an integer >= 0 (0: only last.pt and best.pt)")
    on_nonfinite: Literal["skip", "stop", "ignore"] = _f()
    max_skipped_steps: Annotated[int, Range(ge=0)] | None = _f(
        allowed="null (no limit) or an integer >= 0 (skipped steps before the run stops)"
    )
    sampling: Literal["round_robin", "proportional", "temperature", "all"] = _f()
    temperature: Positive = _f(allowed="a number > 0 (1: proportional to size; large: uniform)")
    epoch_length: Annotated[int | str, Check(_epoch_length, "largest, smallest, or a number of steps >= 1")] = _f(
        allowed="largest, smallest, or a number of steps >= 1"
    )


#: experiment trackers, ``logger.backends.<name>``: one module each in mtl_cli/train/loggers/ (read
#: lazily, like the registries of mtl_cli/registry.py), one option each in conf/logger/
LOGGER_BACKENDS = Registry("logger backend", "mtl_cli.train.loggers")


def _empty_backends_is_none(cls):
    """``backends: {}`` in conf/logger/default.yaml (a mapping, so that several ``logger=`` options
    merge their backends) is the field's default ``None`` (a dataclass default cannot be a mutable
    mapping); both mean no backend."""
    f = cls.__dict__["backends"]
    if f.default == {}:
        f.default = None
    return cls


@dataclass(frozen=True)
@_empty_backends_is_none
@yaml_defaults("logger/default.yaml")
class LoggerConfig:
    log_every: PosInt = _f(allowed="an integer >= 1 (optimizer steps)")
    jsonl: bool = _f()
    csv: bool = _f()
    console_summary: bool = _f()
    grad_diagnostics_every: PosInt | None = _f(allowed="null (off) or an integer >= 1 (optimizer steps)")
    tensorboard: bool = _f()
    # each name and its settings: validation.run.check_tensorboard (per backend, with its class's keys)
    backends: dict[str, dict | None] | None = _f(
        allowed="a mapping of backend names to their settings (a mapping, or null: off); logger=<name> adds one"
    )


@dataclass
class TaskConfig:
    kind: str | None = _f(None, "a task kind (classification, binary, multilabel, regression, ...)")
    target: str | None = _f(None, "a target offered by the data (defaults to the task name)")
    dataset: str | None = _f(None, "null (the `data` source) or a name under `datasets`")
    input: str | None = _f(None, "an input key of the data (null: the only input)")
    weight: NonNeg = _f(1.0, "a number >= 0 (the task's loss is multiplied by it before any weighting method)")
    role: Literal["primary", "auxiliary"] = _f("primary")
    enabled: bool = _f(True)
    loss: str | None = _f(None)
    metrics: list[str] | None = _f(None)
    primary_metric: str | None = _f(None)
    head: dict | None = _f(None)
    num_classes: PosInt | None = _f(None, "null (from the data) or an integer >= 1")
    ignore_index: int | None = _f(None)
    pos_weight: Positive | None = _f(None)


@dataclass
class RootConfig:
    seed: Seed = _f(0)
    device: str = _f("auto", "auto, cpu, cuda, cuda:<i> or mps")
    run_dir: str | None = _f(None)
    resume: str | None = _f(
        None,
        "null (a new run), auto (continue run_dir if it has a checkpoint), or a run directory or checkpoint file",
    )
    resume_strict: bool = _f(True)
    overwrite: bool = _f(
        False, "false (a run directory that holds a finished or started run is refused) or true (start it over)"
    )
    baseline: Literal["stl"] | None = _f(
        None, "null (train the configured model) or stl (one single-task run per task)"
    )
    baseline_dir: str | None = _f(None, "null, or the run directory of a baseline=stl run (adds delta_m)")
    allowed_targets: list[str] | None = _f(
        None,
        "module prefixes (e.g. [mypkg.optim]) whose callables a config's _target_ may name, "
        "besides torch.optim, torchvision and mtl_cli",
    )
    objectives: list[str] | None = _f(
        None,
        "null (a sweep gets the selection score) or a list of <task>/<metric> (those val metrics at the "
        "selected epoch, e.g. [shape/accuracy, size/mae])",
    )


#: top-level keys that hold an optional section (checked on their own)
OPTIONAL_SECTIONS = ("datasets",)


#: top-level keys that hold a section; everything else is a RootConfig field
SECTIONS = (
    "data",
    "tasks",
    "backbone",
    "arch",
    "head",
    "weighting",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
)
