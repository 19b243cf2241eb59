"""The one place that turns a validated config (:class:`~mtl_cli.validation.Plan`) into
objects: tasks, datasets, model, weighting, optimizer and scheduler."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .data.base import InputSpec
from .models.base import ModelContext, MTLModel
from .registry import ARCHS, BACKBONES, HEADS, TASK_KINDS, WEIGHTINGS
from .tasks.base import Task
from .validation import Plan
from .validation.optim import RESERVED_SCHEDULER_KEYS, import_target_class
from .weighting.base import Weighting


def _kwargs(node: dict) -> dict:
    return {k: v for k, v in node.items() if k != "name"}


def build_tasks(plan: Plan) -> list[Task]:
    tasks = []
    for name, t in plan.tasks.items():
        tasks.append(
            Task(
                name=name,
                kind=TASK_KINDS.get(t["kind"])(),
                input=t["input_key"],
                target=t["target_key"],
                dataset=t["dataset"],
                spec=plan.spec.targets[t["target_key"]],
                loss_name=t["loss"],
                metric_names=list(t["metrics"]),
                primary_metric=t["primary_metric"],
                weight=float(t["weight"]),
                role=t["role"],
                head=dict(t["head"]),
                num_classes=t["num_classes"],
                ignore_index=t["ignore_index"],
                pos_weight=t["pos_weight"],
            )
        )
    return tasks


def build_model(plan: Plan, tasks: list[Task]) -> MTLModel:
    cfg = plan.cfg

    def make_backbone(spec: InputSpec, node: dict | None = None):
        node = cfg["backbone"] if node is None else node
        return BACKBONES.get(node["name"])(spec, **_kwargs(node))

    def make_head(task: Task, in_shape: tuple[int, ...]):
        out_size = None
        if task.kind.dense:
            out_size = tuple(task.spec.shape[-2:])
        return HEADS.get(task.head["name"])(in_shape, task.out_features, out_size, **_kwargs(task.head))

    ctx = ModelContext(tasks=tasks, inputs=plan.spec.inputs, make_backbone=make_backbone, make_head=make_head)
    return ARCHS.get(cfg["arch"]["name"])(ctx, **_kwargs(cfg["arch"]))


def build_weighting(plan: Plan, tasks: list[Task]) -> Weighting:
    node = plan.cfg["weighting"]
    return WEIGHTINGS.get(node["name"])([t.name for t in tasks], [t.weight for t in tasks], **_kwargs(node))


def _import(plan: Plan, path: str, where: str) -> Any:
    """The callable ``path`` names, only from an allowed module (the defaults and the plan's
    ``allowed_targets``): checked again here, as ``plan`` need not come from ``validate``."""
    return import_target_class(where, path, tuple(plan.cfg.get("allowed_targets") or ()))


def build_optimizer(plan: Plan, model: nn.Module, weighting: nn.Module) -> torch.optim.Optimizer:
    node = dict(plan.cfg["optimizer"])
    cls = _import(plan, node.pop("_target_"), "optimizer")
    node = {k: v for k, v in node.items() if not k.startswith("_")}
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": params}]
    extra = [p for p in weighting.parameters() if p.requires_grad]  # e.g. learned loss scales
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    if "fused" not in node and fused_available(cls, params):
        node["fused"] = True  # one kernel per step, and a skipped step masked on the device (found_inf)
    return cls(groups, **node)


def fused_available(cls: type, params: Sequence[torch.Tensor]) -> bool:
    """Whether ``cls`` has a fused implementation for ``params``' device and dtypes (torch's own
    Adam, AdamW, SGD and Adagrad on CPUs and CUDA GPUs, floating parameters)."""
    import inspect

    if "fused" not in inspect.signature(cls).parameters or not params:
        return False
    devices = {p.device.type for p in params}
    return devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def build_scheduler(plan: Plan, optimizer: torch.optim.Optimizer, total_steps: int):
    """The configured scheduler, preceded by a linear warmup of ``warmup_steps``.

    ``auto`` for ``T_max``/``total_iters``/``total_steps`` means the steps left after warmup
    (counted in the scheduler's ``interval``: optimizer steps or epochs). Returns
    ``(scheduler or None, interval)``.
    """
    node = dict(plan.cfg["scheduler"])
    warmup = int(node.pop("warmup_steps", 0) or 0)
    start = float(node.pop("warmup_start_factor", 0.01))
    interval = node.pop("interval", "step")
    for k in RESERVED_SCHEDULER_KEYS:
        node.pop(k, None)
    target = node.pop("_target_", None)
    node = {k: v for k, v in node.items() if not k.startswith("_")}
    main = None
    if target is not None:
        for k, v in node.items():
            if v == "auto":
                node[k] = max(1, total_steps - warmup)
        main = _import(plan, target, "scheduler")(optimizer, **node)
    if warmup <= 0:
        return main, interval
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    if main is None:
        return warm, interval
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup]), interval
