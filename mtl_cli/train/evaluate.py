"""Evaluation: per-task masked losses and torchmetrics metrics over a split, and model selection."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import torch
from torch import nn

from ..tasks.base import HIGHER, Task
from .batches import to_device


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    tasks: list[Task],
    device: torch.device,
    limit: int | None = None,
    autocast=contextlib.nullcontext,
    comm=None,
    channels_last: bool = False,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value, "loss": mean loss}}; NaN for a task with no labelled sample.

    With several processes (``comm`` active) each evaluates its shard of the split: the loss sums
    and labelled counts are all-reduced and torchmetrics reduces its states over the processes
    when it computes, so the figures are those of one process on the whole split."""
    model.eval()
    metrics = {t.name: {m: fn.to(device) for m, fn in t.make_metrics().items()} for t in tasks}
    loss_sum = torch.zeros(len(tasks), dtype=torch.float64, device=device)
    labelled = torch.zeros(len(tasks), dtype=torch.float64, device=device)
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        inputs, targets, masks = to_device(batch, device, channels_last)
        with autocast():
            preds = model(inputs)
        for j, t in enumerate(tasks):
            mask = masks[t.target]
            n = mask.sum()
            loss_sum[j] += t.loss(preds[t.name], targets[t.target], mask).double() * n
            labelled[j] += n
            if bool(n > 0):
                p, y = t.kind.metric_inputs(t, preds[t.name], targets[t.target], mask)
                for m in metrics[t.name].values():
                    m.update(p, y)
    model.train()
    if comm is not None and comm.active:
        both = comm.all_reduce(torch.cat([loss_sum, labelled]), "sum", "evaluation")
        loss_sum, labelled = both[: len(tasks)], both[len(tasks) :]
    out: dict[str, dict[str, float]] = {}
    counts = labelled.tolist()
    losses = (loss_sum / labelled.clamp_min(1)).tolist()
    for j, t in enumerate(tasks):
        if counts[j] == 0:
            out[t.name] = {m: math.nan for m in t.metric_names} | {"loss": math.nan}
            continue
        out[t.name] = {m: _compute(fn) for m, fn in metrics[t.name].items()} | {"loss": losses[j]}
    return out


def _compute(metric) -> float:
    """A metric's value, or NaN where it is undefined (e.g. R² of fewer than two samples)."""
    try:
        return float(metric.compute())
    except (ValueError, RuntimeError, ZeroDivisionError):
        return math.nan


def _relative_gain(ref: float, d: float) -> float:
    """``(ref - d) / ref`` clipped below at -1 (a distance that doubled or worse), so that one task
    that started at its optimum (``ref`` = 0, e.g. an accuracy of 1 at the first evaluation)
    cannot swamp the mean: 0 while it stays there, -1 once it leaves it."""
    if ref <= 1e-12:
        return 0.0 if d <= 1e-12 else -1.0
    return max(-1.0, (ref - d) / ref)


class Selector:
    """Chooses the best evaluation by ``monitor``.

    - ``<task>/<metric>``: that metric (its direction decides).
    - ``mean_rel``: the mean, over primary tasks, of the relative reduction of each task's primary
      metric's distance to its optimum (1 for scores such as accuracy, 0 for errors such as MAE)
      against the first evaluation: ``mean_t (d_t(first) - d_t(now)) / d_t(first)``, each term
      clipped below at -1 (so a task already at its optimum at the first evaluation cannot swamp
      the mean). Higher is better; 0 at the first evaluation, 1 would be perfect. Distances rather than raw values keep
      a near-zero starting score (an F1 of 0.002) from dominating the mean.
    - ``delta_m``: Δm in percent (``train/baselines.py delta_m``) of the primary tasks' metrics against
      ``baselines``, the single-task runs' val metrics ``{task: {metric: value}}``. Higher is better;
      unlike ``mean_rel`` it compares runs, not only the epochs of one run.
    """

    def __init__(self, monitor: str, tasks: list[Task], baselines: dict[str, dict[str, float]] | None = None):
        self.monitor = monitor
        self.tasks = tasks
        if monitor == "delta_m" and baselines is None:
            raise ValueError("monitor=delta_m needs the baselines' val metrics")
        self.baselines = baselines
        self.directions = {t.name: {m: t.direction(m) for m in t.metric_names} for t in tasks if t.role == "primary"}
        self.reference: dict[str, float] | None = None
        self.best_score = -math.inf
        self.best_epoch: int | None = None

    def score(self, results: dict[str, dict[str, float]]) -> float:
        """A number where higher is better (NaN counts as worst)."""
        if self.monitor == "delta_m":
            from ..results.delta_m import delta_m

            return delta_m(results, self.baselines, self.directions)["delta_m"]
        if self.monitor != "mean_rel":
            task, metric = self.monitor.split("/", 1)
            t = next(t for t in self.tasks if t.name == task)
            v = results[task][metric]
            return v if t.direction(metric) == HIGHER else -v
        primary = [t for t in self.tasks if t.role == "primary"]
        dist = {t.name: t.distance_to_optimum(t.primary_metric, results[t.name][t.primary_metric]) for t in primary}
        if self.reference is None:
            self.reference = dist
        # tasks without a value (no labelled val sample) are left out of the mean
        rel = [
            _relative_gain(self.reference[n], d)
            for n, d in dist.items()
            if not (math.isnan(d) or math.isnan(self.reference[n]))
        ]
        return sum(rel) / len(rel) if rel else math.nan

    def update(self, results: dict[str, dict[str, float]], epoch: int) -> tuple[float, bool]:
        s = self.score(results)
        s_cmp = -math.inf if math.isnan(s) else s
        improved = self.best_epoch is None or s_cmp > self.best_score
        if improved:
            self.best_score, self.best_epoch = s_cmp, epoch
        return s, improved

    def state_dict(self) -> dict:
        return {"reference": self.reference, "best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.reference = state["reference"]
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]


class EarlyStopping:
    """``trainer.early_stopping``: stop once ``patience`` evaluations in a row have not raised the
    monitored score (higher is better, NaN the worst) by more than ``min_delta`` above the best
    so far. ``patience`` None: never."""

    def __init__(self, patience: int | None, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None  # the best score so far (None before the first evaluation)
        self.stale = 0  # evaluations since the last improvement
        self.stopped_at: int | None = None  # the epoch after which it stopped the run (set by the trainer)

    def update(self, score: float) -> bool:
        """Record an evaluation's score; True when the run should stop."""
        s = -math.inf if math.isnan(score) else score
        if self.best is None or s > self.best + self.min_delta:
            self.best, self.stale = s, 0
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "stale": self.stale, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.stale = int(state["stale"])
        self.stopped_at = None if state["stopped_at"] is None else int(state["stopped_at"])
