"""Optimizer and scheduler nodes: ``_target_`` only from allowed module prefixes (checked before
anything is imported), and only a class of the kind the key needs (an optimizer class for
``optimizer._target_``, a learning-rate scheduler class for ``scheduler._target_``: checked after
the import, before anything is called, so an allowed module's other callables, such as
``torchvision.utils.save_image``, are never run); keys against the target's signature; values
judged by torch on a throw-away parameter (the optimizer) or a dry run of a few steps (the
scheduler)."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, cast

from ..config.checks import Problems
from ..config.targets import import_target, is_dotted_path
from ..config.typecheck import all_params
from ..errors import ConfigError, Problem

RESERVED_SCHEDULER_KEYS = ("warmup_steps", "warmup_start_factor", "interval")


def check_allowed_targets(p: Problems, value: Any) -> tuple[str, ...]:
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


def target_class_problem(where: str, fn: Any, target: str) -> Problem | None:
    """Why ``fn`` (what ``<where>._target_`` names) is not a class that ``where`` can use: an
    ``optimizer`` must be a ``torch.optim.Optimizer`` subclass whose ``step`` needs no closure, a
    ``scheduler`` a ``torch.optim.lr_scheduler.LRScheduler`` subclass. None when it is."""
    import torch

    kinds = {
        "optimizer": (torch.optim.Optimizer, "an optimizer class (a subclass of torch.optim.Optimizer)"),
        "scheduler": (
            torch.optim.lr_scheduler.LRScheduler,
            "a learning-rate scheduler class (a subclass of torch.optim.lr_scheduler.LRScheduler)",
        ),
    }
    base, what = kinds[where]
    example = "torch.optim.AdamW" if where == "optimizer" else "torch.optim.lr_scheduler.CosineAnnealingLR"
    if not (isinstance(fn, type) and issubclass(fn, base)):
        return Problem(
            f"{where}._target_",
            f"not {what}",
            target,
            allowed=what,
            fix=f"name a class such as {example}",
        )
    if where == "optimizer":
        closure = inspect.signature(cast("type[torch.optim.Optimizer]", fn).step).parameters.get("closure")
        if closure is not None and closure.default is inspect.Parameter.empty:
            return Problem(
                "optimizer._target_",
                "this optimizer needs a closure that re-evaluates the loss at every step, which the trainer "
                "does not give (one forward and backward per step)",
                target,
                allowed="optimizers whose step() needs no closure (SGD, Adam, AdamW, ...)",
                fix="choose optimizer=adamw|adam|sgd or another torch.optim class",
            )
    return None


def import_target_class(where: str, target: Any, allowed: tuple[str, ...] = ()) -> Any:
    """The class ``<where>._target_`` names, imported from an allowed module and of the kind
    ``where`` needs; raises ConfigError otherwise (the builder's second line of defence)."""
    fn = import_target(target, allowed, key=f"{where}._target_")
    problem = target_class_problem(where, fn, str(target))
    if problem is not None:
        raise ConfigError([problem])
    return fn


def _check_target(
    p: Problems,
    where: str,
    node: Any,
    skip: tuple[str, ...],
    extra: tuple[str, ...] = (),
    allowed: tuple[str, ...] = (),
):
    """Import ``node._target_`` (only from an allowed module prefix: the defaults and ``allowed``),
    check that it is a class of the kind ``where`` needs, and check the node's keys against its
    signature; return it, or None after a problem."""
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
    problem = target_class_problem(where, fn, str(target))
    if problem is not None:
        p.items.append(problem)
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


def check_optimizer(p: Problems, node: dict, allowed: tuple[str, ...] = ()):
    """Check the optimizer node; return a dummy instance (on one parameter) when it is valid."""
    n0 = len(p.items)
    fn = _check_target(p, "optimizer", node, skip=("params",), allowed=allowed)
    if fn is None:
        if isinstance(node, dict) and node.get("_target_") is None:
            p.add("optimizer._target_", "missing", fix="choose optimizer=adamw|adam|sgd or set optimizer._target_")
        return None
    lr = node.get("lr")
    if lr is not None and (
        not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0 or not math.isfinite(lr)
    ):
        p.add(
            "optimizer.lr",
            "learning rate must be a finite number > 0",
            lr,
            allowed="a finite number > 0",
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


def check_scheduler(p: Problems, node: dict, optimizer=None, allowed: tuple[str, ...] = ()) -> None:
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
    f = node.get("warmup_start_factor", 0.01)  # checked even without warmup: a typo is still a typo
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
    if _steps_on_metric(fn):
        _check_metric_scheduler(p, node, fn)
        if len(p.items) > n0:
            return
    _dry_run_scheduler(p, node, fn, optimizer)


def _steps_on_metric(fn) -> bool:
    """A scheduler class whose ``step`` reads a metric (ReduceLROnPlateau and its kind)."""
    step = getattr(fn, "step", None)
    try:
        return step is not None and "metrics" in inspect.signature(step).parameters
    except (TypeError, ValueError):
        return False


def _check_metric_scheduler(p: Problems, node: dict, fn) -> None:
    """A scheduler that reads a metric steps on the monitored score (``trainer.monitor``, higher
    is better) after each validation: interval epoch, no warmup, mode max."""
    target = node["_target_"]
    if node.get("interval", "step") != "epoch":
        p.add(
            "scheduler.interval",
            f"{target} steps on the monitored score after each validation, not per optimizer step",
            node.get("interval", "step"),
            allowed="epoch",
            fix="set scheduler.interval=epoch",
        )
    if node.get("warmup_steps", 0):
        p.add(
            "scheduler.warmup_steps",
            f"{target} steps on the monitored score: a warmup cannot be chained before it",
            node.get("warmup_steps"),
            allowed="0",
            fix="set scheduler.warmup_steps=0, or choose another scheduler for a warmup",
        )
    params = inspect.signature(fn).parameters
    if "mode" in params:
        mode = node.get("mode", params["mode"].default)
        if mode != "max":
            p.add(
                "scheduler.mode",
                "the monitored score (trainer.monitor) is higher-is-better, whatever the metric",
                mode,
                allowed="max",
                fix="set scheduler.mode=max",
            )


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
            on_metric = _steps_on_metric(fn)
            for _ in range(3):
                sched.step(0.0) if on_metric else sched.step()
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
