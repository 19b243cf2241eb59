"""The training loop, top to bottom: build, train epochs, evaluate, select, test, summarise.

Hot path (one micro-batch): move the batch, forward under autocast, per-task masked losses
[T], ``weighting.backward`` (which scales for AMP and accumulation), and every
``accumulate_grad_batches`` micro-batches: unscale, clip, optimizer and scheduler step. Nothing
in it synchronises with the host: losses accumulate on the device and are read (``.tolist()``)
only every ``logger.log_every`` optimizer steps.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..build import build_model, build_optimizer, build_scheduler, build_tasks, build_weighting
from ..config.validate import Plan
from ..weighting.base import BackwardContext
from .batches import make_loader, to_device
from .evaluate import Selector, evaluate
from .rundir import MetricsWriter, environment, peak_memory_mb, save_checkpoint, write_json

log = logging.getLogger("mtl_cli")


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def autocast_for(precision: str, device: torch.device):
    if precision == "32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    micro: int = 0  # micro-batches seen
    train_time: float = 0.0  # seconds spent in training steps (not evaluation)


def fit(plan: Plan, run_dir: Path) -> dict:
    """Train, select, test; write the run directory; return the summary dict."""
    cfg, tcfg, lcfg = plan.cfg, plan.cfg["trainer"], plan.cfg["logger"]
    device = resolve_device(cfg["device"])
    seed_everything(cfg["seed"], tcfg["deterministic"])
    t_start = time.perf_counter()

    tasks = build_tasks(plan)
    splits = plan.source.load()
    write_json(run_dir / "data.json", {"splits": {k: len(v) for k, v in splits.items()}, **plan.spec.artifacts})
    bs, ebs = tcfg["batch_size"], tcfg["eval_batch_size"] or 2 * tcfg["batch_size"]
    train_loader = make_loader(splits["train"], bs, True, cfg["seed"], tcfg["num_workers"], device)
    val_loader = make_loader(splits["val"], ebs, False, cfg["seed"], tcfg["num_workers"], device)
    test_loader = make_loader(splits["test"], ebs, False, cfg["seed"], tcfg["num_workers"], device)

    model = build_model(plan, tasks).to(device)
    weighting = build_weighting(plan, tasks).to(device)
    optimizer = build_optimizer(plan, model, weighting)
    batches_per_epoch = len(train_loader)
    if tcfg["limit_train_batches"] is not None:
        batches_per_epoch = min(batches_per_epoch, tcfg["limit_train_batches"])
    accum = tcfg["accumulate_grad_batches"]
    total_steps = tcfg["max_epochs"] * max(1, batches_per_epoch // accum)
    if tcfg["max_steps"] is not None:
        total_steps = min(total_steps, tcfg["max_steps"])
    sched_total = total_steps if cfg["scheduler"].get("interval", "step") == "step" else tcfg["max_epochs"]
    scheduler, interval = build_scheduler(plan, optimizer, sched_total)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg["precision"] == "fp16")
    autocast = autocast_for(tcfg["precision"], device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = model.parameter_groups()
    log.info("model: %s shared parameters, %s task-specific (%s)", f"{groups['shared']:,}",
             f"{sum(v for k, v in groups.items() if k != 'shared'):,}", device)

    metrics = MetricsWriter(run_dir, lcfg["jsonl"], lcfg["csv"])
    selector = Selector(tcfg["monitor"], tasks)
    prog = Progress()
    names = [t.name for t in tasks]
    ckpt_dir = run_dir / "checkpoints"
    history: list[dict] = []

    def state(kind: str) -> dict:
        return {
            "kind": kind, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(), "weighting": weighting.state_dict(),
            "epoch": prog.epoch, "step": prog.step, "selector": selector.state_dict(),
            "rng": {"torch": torch.get_rng_state()}, "task_names": names,
            "config_yaml": OmegaConf.to_yaml(OmegaConf.create(cfg)),
        }

    def backward(total: torch.Tensor) -> None:
        scaler.scale(total / accum).backward()

    def optimizer_step() -> None:
        if tcfg["gradient_clip_val"] is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, tcfg["gradient_clip_val"])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None and interval == "step":
            scheduler.step()
        prog.step += 1
        weighting.on_step_end(prog.step)

    loss_acc = torch.zeros(len(tasks), device=device)
    weight_acc = torch.zeros(len(tasks), device=device)
    n_acc, t_log, samples = 0, time.perf_counter(), 0
    done = False
    model.train()
    for epoch in range(tcfg["max_epochs"]):
        bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{tcfg['max_epochs']}",
                   disable=not tcfg["progress"], leave=False, dynamic_ncols=True)
        t_epoch = time.perf_counter()
        for i, batch in enumerate(train_loader):
            if i >= batches_per_epoch:
                break
            inputs, targets, masks = to_device(batch, device)
            with autocast():
                preds = model(inputs)
                losses = torch.stack([t.loss(preds[t.name], targets[t.target], masks[t.target]) for t in tasks])
            w = weighting.backward(losses, BackwardContext(model, backward, prog.step))
            prog.micro += 1
            loss_acc += losses.detach().float()
            weight_acc += w.float()
            n_acc += 1
            samples += next(iter(inputs.values())).shape[0]
            bar.update(1)
            if prog.micro % accum != 0:
                continue
            optimizer_step()
            if prog.step % lcfg["log_every"] == 0:
                rec = _train_record(prog, epoch, names, loss_acc / n_acc, weight_acc / n_acc, optimizer,
                                    samples / (time.perf_counter() - t_log))
                metrics.log(rec)
                bar.set_postfix({n: f"{rec[f'loss/{n}']:.3g}" for n in names} | {"it/s": f"{rec['samples_per_s']:.0f}"})
                loss_acc.zero_(), weight_acc.zero_()
                n_acc, t_log, samples = 0, time.perf_counter(), 0
            if tcfg["max_steps"] is not None and prog.step >= tcfg["max_steps"]:
                done = True
                break
        bar.close()
        prog.train_time += time.perf_counter() - t_epoch
        prog.epoch = epoch + 1
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        weighting.on_epoch_end(prog.epoch)
        last_epoch = done or prog.epoch == tcfg["max_epochs"]
        if prog.epoch % tcfg["eval_every"] == 0 or last_epoch:
            res = evaluate(model, val_loader, tasks, device, tcfg["limit_val_batches"], autocast)
            score, improved = selector.update(res, prog.epoch)
            rec = {"split": "val", "epoch": prog.epoch, "step": prog.step, "score": score}
            rec |= {f"{t}/{m}": v for t, r in res.items() for m, v in r.items()}
            metrics.log(rec)
            history.append(rec)
            metrics.write_csv()
            log.info("epoch %d  val %s  score %.4f%s", prog.epoch, _short(res, tasks), score, "  (best)" if improved else "")
            if improved:
                save_checkpoint(state("best"), ckpt_dir / "best.pt")
        save_checkpoint(state("last"), ckpt_dir / "last.pt")
        if done:
            break
    # the last optimizer step may be incomplete when batches do not divide by accum: flush it
    if prog.micro % accum != 0:
        optimizer_step()

    final_val = history[-1] if history else {}
    best = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best["model"])
    test = evaluate(model, test_loader, tasks, device, tcfg["limit_test_batches"], autocast)
    metrics.log({"split": "test", "epoch": selector.best_epoch, "step": best["step"]}
                | {f"{t}/{m}": v for t, r in test.items() for m, v in r.items()})
    metrics.close()
    best_val = next(h for h in history if h["epoch"] == selector.best_epoch)
    peak, peak_kind = peak_memory_mb(device)
    summary = {
        "run_dir": str(run_dir),
        "objective": {"monitor": tcfg["monitor"], "value": selector.best_score, "direction": "maximize"},
        "selected_epoch": selector.best_epoch,
        "epochs": prog.epoch,
        "steps": prog.step,
        "tasks": {t.name: {"kind": t.kind.name, "role": t.role, "weight": t.weight, "primary_metric": t.primary_metric,
                           "directions": {m: t.direction(m) for m in t.metric_names}} for t in tasks},
        "test": test,
        "val_selected": _nest(best_val, tasks),
        "val_final": _nest(final_val, tasks),
        "time_per_step_s": prog.train_time / max(1, prog.step),
        "train_time_s": prog.train_time,
        "wall_time_s": time.perf_counter() - t_start,
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,
        "device": str(device),
        "parameters": groups,
        "environment": environment(),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _train_record(prog: Progress, epoch: int, names, losses, weights, optimizer, throughput) -> dict:
    lv, wv = losses.tolist(), weights.tolist()  # the one host sync per logging interval
    rec = {"split": "train", "epoch": epoch + 1, "step": prog.step}
    rec |= {f"loss/{n}": v for n, v in zip(names, lv)}
    rec |= {f"weight/{n}": v for n, v in zip(names, wv)}
    rec |= {"loss": sum(a * b for a, b in zip(lv, wv)), "lr": optimizer.param_groups[0]["lr"], "samples_per_s": throughput}
    return rec


def _nest(rec: dict, tasks) -> dict:
    return {t.name: {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith(f"{t.name}/")} for t in tasks}


def _short(res: dict, tasks) -> str:
    return "  ".join(f"{t.name}/{t.primary_metric}={res[t.name][t.primary_metric]:.4g}" for t in tasks)


def objective_value(summary: dict) -> float:
    v = summary["objective"]["value"]
    return float("nan") if v is None or (isinstance(v, float) and math.isinf(v)) else float(v)
