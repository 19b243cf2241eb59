"""Schemas of the config sections that are not registry components.

Each field's metadata may hold ``check`` (a predicate on the value) and ``allowed`` (its text for
error messages). Registry components (data, backbone, arch, heads, weighting) are checked against
their class signatures instead; optimizer and scheduler against their ``_target_``'s signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, check=None, allowed: str | None = None, help: str = ""):
    return field(default=default, metadata={"check": check, "allowed": allowed, "help": help})


SAMPLING = ("round_robin", "proportional", "temperature", "all")
NONFINITE = ("skip", "stop", "ignore")


def _pos(v) -> bool:
    return v is None or v >= 1


@dataclass
class TrainerConfig:
    max_epochs: int = _f(10, lambda v: v >= 1, "an integer >= 1")
    max_steps: int | None = _f(None, _pos, "null or an integer >= 1")
    batch_size: int = _f(64, lambda v: v >= 1, "an integer >= 1")
    eval_batch_size: int | None = _f(None, _pos, "null (2 x batch_size) or an integer >= 1")
    num_workers: int = _f(0, lambda v: v >= 0, "an integer >= 0")
    precision: str = _f("32", lambda v: v in ("32", "bf16", "fp16"), "32, bf16 or fp16 (fp16 needs CUDA)")
    accumulate_grad_batches: int = _f(1, lambda v: v >= 1, "an integer >= 1")
    gradient_clip_val: float | None = _f(None, lambda v: v is None or v > 0, "null or a number > 0")
    eval_every: int = _f(1, lambda v: v >= 1, "an integer >= 1 (epochs)")
    limit_train_batches: int | None = _f(None, _pos, "null or an integer >= 1")
    limit_val_batches: int | None = _f(None, _pos, "null or an integer >= 1")
    limit_test_batches: int | None = _f(None, _pos, "null or an integer >= 1")
    monitor: str = _f(
        "mean_rel",
        None,
        "mean_rel, delta_m (Δm against baseline_dir's single-task "
        "baselines; needs baseline_dir), or <task>/<metric> (e.g. shape/accuracy)",
    )
    # several datasets: which one feeds each training step, and how long an epoch is
    sampling: str = _f("round_robin", lambda v: v in SAMPLING, ", ".join(SAMPLING))
    temperature: float = _f(2.0, lambda v: v > 0, "a number > 0 (1: proportional to size; large: uniform)")
    epoch_length: int | str = _f(
        "largest",
        lambda v: v in ("largest", "smallest") or (isinstance(v, int) and v >= 1),
        "largest, smallest, or a number of steps >= 1",
    )
    deterministic: bool = _f(False)
    progress: bool = _f(True)
    # checkpoints (last.pt at every epoch end; best.pt at every improvement)
    checkpoint_every: int | None = _f(None, _pos, "null (epoch ends only) or an integer >= 1 (optimizer steps)")
    save_top_k: int = _f(0, lambda v: v >= 0, "an integer >= 0 (0: only last.pt and best.pt)")
    # non-finite losses or gradients
    on_nonfinite: str = _f("skip", lambda v: v in NONFINITE, ", ".join(NONFINITE))
    max_skipped_steps: int | None = _f(
        10, lambda v: v is None or v >= 0, "null (no limit) or an integer >= 0 (skipped steps before the run stops)"
    )


@dataclass
class LoggerConfig:
    log_every: int = _f(25, lambda v: v >= 1, "an integer >= 1 (optimizer steps)")
    jsonl: bool = _f(True)
    csv: bool = _f(True)
    console_summary: bool = _f(True)
    grad_diagnostics_every: int | None = _f(None, _pos, "null (off) or an integer >= 1 (optimizer steps)")
    tensorboard: bool = _f(False)


@dataclass
class TaskConfig:
    kind: str | None = _f(None, None, "a task kind (classification, binary, multilabel, regression, ...)")
    target: str | None = _f(None, None, "a target offered by the data (defaults to the task name)")
    dataset: str | None = _f(None, None, "null (the `data` source) or a name under `datasets`")
    input: str | None = _f(None, None, "an input key of the data (null: the only input)")
    weight: float = _f(1.0, lambda v: v >= 0, "a number >= 0")
    role: str = _f("primary", lambda v: v in ("primary", "auxiliary"), "primary or auxiliary")
    enabled: bool = _f(True)
    loss: str | None = _f(None)
    metrics: list[str] | None = _f(None)
    primary_metric: str | None = _f(None)
    head: dict | None = _f(None)
    num_classes: int | None = _f(None, _pos, "null (from the data) or an integer >= 1")
    ignore_index: int | None = _f(None)
    pos_weight: float | None = _f(None, lambda v: v is None or v > 0, "null or a number > 0")


@dataclass
class RootConfig:
    seed: int = _f(0, lambda v: v >= 0, "an integer >= 0")
    device: str = _f("auto", None, "auto, cpu, cuda, cuda:<i> or mps")
    run_dir: str | None = _f(None)
    resume: str | None = _f(
        None,
        None,
        "null (a new run), auto (continue run_dir if it has a checkpoint), or a run directory or checkpoint file",
    )
    resume_strict: bool = _f(True)
    baseline: str | None = _f(
        None, lambda v: v in (None, "stl"), "null (train the configured model) or stl (one single-task run per task)"
    )
    baseline_dir: str | None = _f(None, None, "null, or the run directory of a baseline=stl run (adds delta_m)")
    allowed_targets: list[str] | None = _f(
        None,
        None,
        "module prefixes (e.g. [mypkg.optim]) whose callables "
        "a config's _target_ may name, besides torch.optim, torchvision and mtl_cli",
    )
    objectives: list[str] | None = _f(
        None,
        None,
        "null (a sweep gets the selection score) or a list of "
        "<task>/<metric> (those val metrics at the selected epoch, e.g. "
        "[shape/accuracy, size/mae])",
    )


#: top-level keys that hold an optional section (checked on their own)
OPTIONAL_SECTIONS = ("datasets",)


#: top-level keys that hold a section; everything else is a RootConfig field
SECTIONS = ("data", "tasks", "backbone", "arch", "head", "weighting", "optimizer", "scheduler", "trainer", "logger")
