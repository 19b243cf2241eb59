"""One accelerator: the project's training step against a hand-written loop, eager and compiled, and
each weighting method's step against equal weighting and the one-backward-per-task floor.

    .venv/bin/python benchmarks/gpu_step.py                  # CUDA when present (resnet18, 224 px, batch 256)
    .venv/bin/python benchmarks/gpu_step.py --device cpu     # small sizes (small_cnn, 32 px, batch 16)
    .venv/bin/python benchmarks/gpu_step.py --smoke          # every configuration, a few steps (CI, ~1 min)

Every configuration is built from a validated plan (``mtl_cli.config.compose`` + ``validate``):
the shapes data at ``--image-size`` px, one image input, ``--backbone`` (on CUDA torchvision
``resnet18`` without weights, the reference trunk of the GPU figures; ``small_cnn`` on CPU), linear
heads, and T tasks declared in code (as in many_tasks.py): ``t00``, ``t01``, ... alternately
``{kind: classification, target: shape}`` and ``{kind: binary, target: large}``; AdamW (fused where
torch has it, the project's default), ``scheduler=constant``, ``trainer.precision=bf16``,
``trainer.channels_last=true``, ``trainer.data_on_device=true``.

Sides, all in one process, on one fixed batch of ``--batch`` training samples already on the device
(channels-last), given to every side at every step:

- **project**: a real ``mtl_cli.train.trainer.Trainer`` (its ``__init__``: the model, weighting,
  optimizer, scheduler, non-finite checks; ``trainer.compile=true`` for the compiled rows), one
  optimizer step = ``Trainer.train_step([MicroBatch(batch)])``: what ``train_epoch`` calls for each
  step (the batch goes through its ``to_device``, a no-op on device tensors).
- **hand**: the same model built by ``mtl_cli.build.build_model`` from the same plan after the same
  seed (the same initial weights, checked), ``model.to(memory_format=channels_last)``, for the
  compiled rows ``torch.compile(model)`` (same backend and mode; ``--hand-compile split``: its
  ``encode`` and ``decode`` compiled apart, the project's compile boundary); the step written out: forward
  under ``torch.autocast(bf16)``, ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits`` per
  task, summed, ``backward``, ``torch.optim.AdamW(fused=True)`` step, ``zero_grad(set_to_none=True)``.
- **floor** (hand-written, the cost floor of exact gradient methods): the same forward and losses,
  then one ``torch.autograd.grad`` of each task's loss w.r.t. the shared parameters
  (``retain_graph=True``), summed into their ``.grad``; the heads get the gradient of the summed
  losses; the optimizer step.

Timing: the sides of a table run in turn (round robin, the order rotating each round), ``--chunk``
optimizer steps at a time, the device synchronised before and after each chunk (``time.perf_counter``
over the chunk / its steps: the step's real cost on an asynchronous device; on a CPU with
``--threads 1``, the main thread's CPU time, which other processes' time-slicing does not enter); the first
``--warmup`` rounds (compilation, the optimizer state, cuDNN's autotuning) are not counted. Per
side: the median per-step time over the rounds kept (rounds during which other processes used
>= 0.25 core are dropped on a shared CPU when enough quiet ones remain); ratios of medians with
a bootstrap 95% interval over the rounds. Peak memory (CUDA): the side's resident tensors (weights,
optimizer state, the weighting's buffers) plus the most its steps allocated above what was
allocated when they began (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``),
the maximum over its chunks; on CPU "n/a". For gradient methods the size of the task-gradient
matrix G [T, P] is given too (computed, every device).

Equivalence: project and hand sides of a pair run the same number of steps on the same batch, so
at the end their weights must agree: ``rel`` = ||w_project - w_hand|| / ||w_hand - w_initial|| (the
difference relative to how far training moved the weights), reported per pair; 0 means bitwise
equal, a wrong step (a task's loss dropped, another learning rate) gives ~1.

Targets: project / hand <= 1.05, eager and compiled; representation methods <= 1.1x
equal weighting's step; exact (parameter-gradient) methods no slower than the floor at <= 2x
equal weighting's peak memory. Results: ``benchmarks/results/gpu_step_<device>.json`` and ``.txt``
(``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    QUIET,
    ROOT,
    Contention,
    machine,
    median,
    paired_bootstrap_ci,
    quiet_logging,
    table,
)

from mtl_cli.build import build_model, build_tasks  # noqa: E402
from mtl_cli.config.compose import compose  # noqa: E402
from mtl_cli.registry import WEIGHTINGS  # noqa: E402
from mtl_cli.validation import validate  # noqa: E402
from mtl_cli.weighting.engine import GradientWeighting  # noqa: E402

TARGET_HAND = 1.05  # project / hand loop
TARGET_REP = 1.10  # representation methods / equal weighting
TARGET_MEM = 2.0  # exact methods' peak memory / equal weighting's
EQUIV_TOL = 1e-2  # rel weight difference project vs hand after the same steps
DEFAULT_METHODS = "ew,uw,upgrad,pcgrad,mgda,cagrad,nash_mtl,mgda_ub,upgrad@rep"


# --- configs -------------------------------------------------------------------------------------


def task_nodes(n: int) -> dict:
    """T linear heads on the one image input, alternately 4-way classification and binary."""
    return {
        f"t{i:02d}": {"kind": "classification", "target": "shape"}
        if i % 2 == 0
        else {"kind": "binary", "target": "large"}
        for i in range(n)
    }


def make_plan(args, n_tasks: int, extra: list[str]):
    overrides = [
        f"device={args.device}",
        "tasks=none",
        f"backbone={args.backbone}",
        f"data.image_size={args.image_size}",
        f"data.train_size={args.batch}",
        "data.val_size=8",
        "data.test_size=8",
        f"trainer.batch_size={args.batch}",
        "trainer.progress=false",
        "trainer.max_epochs=1",
        "trainer.precision=bf16",
        "trainer.channels_last=true",
        "trainer.data_on_device=true",
        "scheduler=constant",
        "logger.log_every=1000000",
        *args.override,
        *extra,
    ]
    cfg = OmegaConf.to_container(compose(overrides), resolve=True)
    cfg["tasks"] = task_nodes(n_tasks)
    plan = validate(cfg)
    assert len(plan.tasks) == n_tasks
    return plan, overrides


def compile_overrides(args) -> list[str]:
    return [
        "trainer.compile=true",
        f"trainer.compile_backend={args.compile_backend}",
        f"trainer.compile_mode={args.compile_mode}",
    ]


def fixed_batch(plan, device: torch.device) -> dict:
    """The first ``batch_size`` training samples, on the device, images channels-last; only the
    targets the tasks read (and their masks, all set: the shapes data label every sample)."""
    train = plan.source.load()["train"]
    b = train.__getitems__(list(range(plan.cfg["trainer"]["batch_size"])))
    used = sorted({t["target_key"] for t in plan.tasks.values()})
    x = b["inputs"]["image"].to(device, memory_format=torch.channels_last)
    ys = {k: b["targets"][k].to(device) for k in used}
    ms = {k: b["masks"][k].to(device) for k in used}
    assert all(bool(m.all()) for m in ms.values())
    return {"inputs": {"image": x}, "targets": ys, "masks": ms}


# --- the sides -----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor))


def _opt_state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(_bytes(s.values()) for s in opt.state.values())


class ProjectSide:
    """A real Trainer on the plan; one step = ``train_step`` on the fixed batch."""

    def __init__(self, plan, batch: dict, run_dir: Path):
        from mtl_cli.train.sampling import MicroBatch
        from mtl_cli.train.trainer import Trainer

        self.trainer = Trainer(plan, run_dir)
        self.trainer.model.train()
        n = batch["inputs"]["image"].shape[0]
        self.micro = [MicroBatch(batch, ("data",), n)]
        self.model = self.trainer.model
        self.steps = 0

    def step(self) -> None:
        self.trainer.train_step(self.micro)
        self.steps += 1

    def resident_bytes(self) -> int:
        t = self.trainer
        return _bytes(t.model.state_dict().values()) + _opt_state_bytes(t.optimizer) + _bytes(t.weighting.buffers())

    def close(self) -> None:
        self.trainer.metrics.close()
        self.trainer.close_loaders()


class HandSide:
    """The hand-written loop (``floor=False``) or the one-backward-per-task floor (``floor=True``)."""

    def __init__(
        self,
        plan,
        batch: dict,
        device: torch.device,
        compiled: dict | None = None,
        floor: bool = False,
        split: bool = False,
    ):
        torch.manual_seed(plan.cfg["seed"])  # as Trainer.__init__ (seed_everything) before building
        tasks = build_tasks(plan)
        self.model = build_model(plan, tasks).to(device)
        self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.forward: Callable = self.model
        if compiled is not None and split:  # (--hand-compile split: the project's compile boundary)
            m: Any = self.model
            m.encode, m.decode = torch.compile(m.encode, **compiled), torch.compile(m.decode, **compiled)
        elif compiled is not None:
            self.forward = torch.compile(self.model, **compiled)
        opt = plan.cfg["optimizer"]
        assert opt["_target_"] == "torch.optim.AdamW", opt
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=opt["lr"],
            weight_decay=opt["weight_decay"],
            fused=device.type in ("cpu", "cuda"),
        )
        self.x = batch["inputs"]["image"]
        self.heads = [(t.name, t.target, t.kind.name) for t in tasks]
        self.ys = batch["targets"]
        self.ys_float = {k: v.float() for k, v in batch["targets"].items()}
        self.device, self.floor = device, floor
        self.shared = list(self.model.shared_parameters())
        ids = {id(p) for p in self.shared}
        self.own = [p for p in self.model.parameters() if id(p) not in ids]
        self.steps = 0

    def losses(self) -> list[torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            preds = self.forward({"image": self.x})
            out = []
            for name, target, kind in self.heads:
                p = preds[name].float()
                if kind == "classification":
                    out.append(F.cross_entropy(p, self.ys[target]))
                else:
                    out.append(F.binary_cross_entropy_with_logits(p.squeeze(-1), self.ys_float[target]))
        return out

    def step(self) -> None:
        losses = self.losses()
        if not self.floor:
            sum(losses).backward()
        else:
            acc = None
            for loss in losses:  # one backward per task through the shared trunk
                g = torch.autograd.grad(loss, self.shared, retain_graph=True)
                if acc is None:
                    acc = list(g)
                else:
                    torch._foreach_add_(acc, g)
            heads = torch.autograd.grad(sum(losses), self.own)
            for p, gp in zip(self.shared, acc or []):
                p.grad = gp
            for p, gp in zip(self.own, heads):
                p.grad = gp
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1

    def resident_bytes(self) -> int:
        return _bytes(self.model.state_dict().values()) + _opt_state_bytes(self.opt)

    def close(self) -> None:
        pass


def initial_weights(side) -> dict:
    return {k: v.detach().clone() for k, v in side.model.state_dict().items() if v.is_floating_point()}


def compare_weights(project, hand, init: dict) -> dict:
    """After the same steps on the same batch: the two sides' weights, relative to the distance
    training moved them."""
    a, b = project.model.state_dict(), hand.model.state_dict()
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in a)
    keys = [k for k in init if k in a]
    x = torch.cat([a[k].double().flatten() for k in keys])
    y = torch.cat([b[k].double().flatten() for k in keys])
    x0 = torch.cat([init[k].double().flatten() for k in keys])
    moved = float((y - x0).norm())
    diff = float((x - y).norm())
    return {
        "steps": {"project": project.steps, "hand": hand.steps},
        "max_abs_diff": float((x - y).abs().max()),
        "moved_norm": moved,
        "rel": diff / moved if moved > 0 else (0.0 if diff == 0 else math.inf),
        "bitwise_equal": diff == 0.0,
        "ok": project.steps == hand.steps and moved > 0 and diff <= EQUIV_TOL * moved,
    }


# --- timing --------------------------------------------------------------------------------------


def cpu_clock(device: torch.device) -> bool:
    """On a CPU with one torch thread all the work runs in the main thread: its CPU clock
    (``time.thread_time``), which time-slicing by other processes does not enter, times the steps."""
    return device.type == "cpu" and torch.get_num_threads() == 1


def round_robin(sides: dict[str, Any], device: torch.device, rounds: int, warmup: int, chunk: int, say) -> dict:
    """Run the sides in turn, ``chunk`` steps each, the order rotating per round; per side and
    kept round: seconds per step, and (CUDA) the step's peak allocation above its start."""
    names = list(sides)
    clock = time.thread_time if cpu_clock(device) else time.perf_counter
    per: dict[str, list[float]] = {n: [] for n in names}
    peak: dict[str, int] = {n: 0 for n in names}
    foreign: list[float | None] = []
    for r in range(warmup + rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        times: dict[str, float] = {}
        with Contention() as c:
            for n in order:
                side = sides[n]
                _sync(device)
                if device.type == "cuda":
                    base = torch.cuda.memory_allocated(device)
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = clock()
                for _ in range(chunk):
                    side.step()
                _sync(device)
                times[n] = (clock() - t0) / chunk
                if device.type == "cuda":
                    peak[n] = max(peak[n], torch.cuda.max_memory_allocated(device) - base)
        if r < warmup:
            say(f"  warm-up round {r + 1}/{warmup}: " + ", ".join(f"{n} {times[n] * 1e3:.1f}" for n in names) + " ms")
            continue
        foreign.append(c.foreign_cores)
        for n in names:
            per[n].append(times[n])
    if device.type == "cuda" or cpu_clock(device):
        quiet = list(range(rounds))
        basis = "all rounds, " + ("main-thread CPU time" if cpu_clock(device) else "wall time")
    else:
        quiet = [i for i, f in enumerate(foreign) if f is not None and f < QUIET]
        basis = "quiet rounds, wall time"
        if len(quiet) < max(2, rounds // 2):
            quiet, basis = list(range(rounds)), "ALL rounds, wall time (too few quiet ones: the machine was busy)"
    kept = {n: [v[i] for i in quiet] for n, v in per.items()}
    out = {
        "basis": basis,
        "rounds_kept": len(quiet),
        "rounds": rounds,
        "chunk": chunk,
        "foreign_cores": foreign,
        "step_s": {n: median(v) for n, v in kept.items()},
        "per_round_step_s": per,
        "kept": kept,
    }
    if device.type == "cuda":
        out["resident_mb"] = {n: sides[n].resident_bytes() / 2**20 for n in names}
        out["peak_mb"] = {n: (sides[n].resident_bytes() + peak[n]) / 2**20 for n in names}
    return out


def ratio_ci(a: list[float], b: list[float]) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b), resampling the rounds (paired)."""
    if len(a) < 2:
        r = median(a) / median(b)
        return r, r
    return paired_bootstrap_ci(a, b)


# --- the two tables --------------------------------------------------------------------------------


def hand_vs_project(args, device, run_root: Path, say) -> list[dict]:
    rows = []
    modes = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    for label, compiled in modes:
        for n in args.tasks:
            extra = compile_overrides(args) if compiled else []
            plan, overrides = make_plan(args, n, extra)
            batch = fixed_batch(plan, device)
            project = ProjectSide(plan, batch, run_root / f"{label}_{n}")
            ckw = None
            if compiled:
                ckw = {"backend": args.compile_backend}
                if args.compile_backend == "inductor" and args.compile_mode != "default":
                    ckw["mode"] = args.compile_mode
            hand = HandSide(plan, batch, device, ckw, split=args.hand_compile == "split")
            init = initial_weights(hand)
            same_init = all(torch.equal(init[k], v) for k, v in initial_weights(project).items())
            say(
                f"{label}, {n} tasks: project vs hand "
                f"({args.warmup} warm-up + {args.rounds} rounds x {args.chunk} steps)"
            )
            t0 = time.perf_counter()
            res = round_robin({"project": project, "hand": hand}, device, args.rounds, args.warmup, args.chunk, say)
            eq = compare_weights(project, hand, init)
            eq["same_initial_weights"] = same_init
            eq["ok"] = eq["ok"] and same_init
            a, b = res["kept"]["project"], res["kept"]["hand"]
            row = {
                "config": f"{label} bf16 channels_last",
                "compiled": compiled,
                "tasks": n,
                "overrides": overrides + extra,
                "project_step_s": res["step_s"]["project"],
                "hand_step_s": res["step_s"]["hand"],
                "project_img_s": args.batch / res["step_s"]["project"],
                "hand_img_s": args.batch / res["step_s"]["hand"],
                "ratio": res["step_s"]["project"] / res["step_s"]["hand"],
                "ratio_ci95": ratio_ci(a, b),
                "target": TARGET_HAND,
                "equivalence": eq,
                "peak_mb": res.get("peak_mb"),
                "timing": {k: v for k, v in res.items() if k != "kept"},
                "wall_s": time.perf_counter() - t0,
            }
            row["target_met"] = row["ratio"] <= TARGET_HAND
            say(
                f"  project {row['project_step_s'] * 1e3:.2f} / hand {row['hand_step_s'] * 1e3:.2f} ms/step, ratio "
                f"{row['ratio']:.3f}; weights rel diff {eq['rel']:.2e} ({row['wall_s']:.0f} s)"
            )
            rows.append(row)
            project.close()
            del project, hand
    return rows


def method_configs(methods: list[str], modes: list[str]) -> list[tuple[str, list[str], str]]:
    """(label, overrides, kind) per method and mode; ``name@rep``: weighting.source=rep."""
    out = []
    for spec in methods:
        name, _, src = spec.partition("@")
        cls = WEIGHTINGS.get(name)
        base = [f"weighting={name}"] + ([f"weighting.source={src}"] if src else [])
        if not issubclass(cls, GradientWeighting):
            out.append((name, base, "loss-based" if name != "ew" else "equal weighting"))
            continue
        source = src or cls.default_source()
        kind = "representation" if source == "rep" else "parameter gradients (exact)"
        for mode in modes:
            label = f"{name}{' source=rep' if src else ''} mode={mode}"
            out.append((label, base + [f"weighting.mode={mode}"], kind))
    return out


def methods_table(args, device, run_root: Path, say) -> dict:
    n = args.method_tasks
    configs = method_configs(args.methods, args.modes)
    if not any(k == "equal weighting" for _, _, k in configs):
        configs.insert(0, ("ew", ["weighting=ew"], "equal weighting"))
    sides: dict[str, Any] = {}
    info: dict[str, dict] = {}
    batch = None
    for label, extra, kind in configs:
        plan, overrides = make_plan(args, n, extra)
        batch = batch if batch is not None else fixed_batch(plan, device)
        sides[label] = ProjectSide(plan, batch, run_root / f"m_{len(sides)}")
        w = sides[label].trainer.weighting
        g_cols = None
        if isinstance(w, GradientWeighting):
            if w.source == "rep":
                model = sides[label].model
                model.eval()  # (no running-statistics update)
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                    g_cols = model.encode({"image": batch["inputs"]["image"]}).numel()
                model.train()
            else:
                g_cols = sum(p.numel() for p in sides[label].model.shared_parameters() if p.requires_grad)
        info[label] = {"kind": kind, "overrides": overrides, "G_cols": g_cols}
    plan, _ = make_plan(args, n, ["weighting=ew"])
    sides["floor (hand: one backward per task)"] = HandSide(plan, batch, device, floor=True)
    floor_init = initial_weights(sides["floor (hand: one backward per task)"])
    info["floor (hand: one backward per task)"] = {"kind": "floor", "overrides": None, "G_cols": None}
    say(
        f"weighting methods, {n} tasks, eager: {len(sides)} sides round robin "
        f"({args.warmup} warm-up + {args.rounds} rounds)"
    )
    t0 = time.perf_counter()
    res = round_robin(sides, device, args.rounds, args.warmup, args.chunk, say)
    ew = next(lbl for lbl, _, k in configs if k == "equal weighting")
    floor = "floor (hand: one backward per task)"
    # the floor's summed per-task gradients are ew's update up to rounding (bf16 rounds each task's
    # backward on its own, Adam amplifies it in small gradients): a figure, not an equivalence check
    floor_eq = compare_weights(sides[ew], sides[floor], floor_init)
    floor_eq.pop("ok")
    rows = []
    for label, side in sides.items():
        kind = info[label]["kind"]
        s = res["step_s"][label]
        mem = res.get("peak_mb", {}).get(label)
        ew_mem = res.get("peak_mb", {}).get(ew)
        row = {
            "method": label,
            "kind": kind,
            "overrides": info[label]["overrides"],
            "step_s": s,
            "img_s": args.batch / s,
            "vs_ew": s / res["step_s"][ew],
            "vs_ew_ci95": ratio_ci(res["kept"][label], res["kept"][ew]),
            "vs_floor": s / res["step_s"][floor],
            "vs_floor_ci95": ratio_ci(res["kept"][label], res["kept"][floor]),
            "peak_mb": mem,
            "mem_vs_ew": (mem / ew_mem) if mem is not None and ew_mem else None,
            "G_mb_fp32": (n * info[label]["G_cols"] * 4 / 2**20) if info[label]["G_cols"] else None,
            "finite_weights": all(bool(torch.isfinite(p).all()) for p in side.model.parameters()),
        }
        if kind == "representation":
            row["target"], row["target_met"] = f"<= {TARGET_REP}x ew", row["vs_ew"] <= TARGET_REP
        elif kind.startswith("parameter"):
            row["target"] = f"<= floor, memory <= {TARGET_MEM}x ew"
            mem_ok = None if row["mem_vs_ew"] is None else row["mem_vs_ew"] <= TARGET_MEM
            row["target_met"] = row["vs_floor"] <= 1.0 and mem_ok is not False
            row["memory_target_met"] = mem_ok
        rows.append(row)
        side.close()
    say(f"  ({time.perf_counter() - t0:.0f} s)")
    return {
        "tasks": n,
        "rows": rows,
        "floor_vs_ew_equivalence": floor_eq,
        "timing": {k: v for k, v in res.items() if k != "kept"},
    }


# --- main -------------------------------------------------------------------------------------------


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    ap.add_argument(
        "--backbone", default=None, help="conf/backbone name (default resnet18 on CUDA, small_cnn on CPU and --smoke)"
    )
    ap.add_argument("--image-size", type=int, default=None, help="px (default 224 on CUDA, 32 on CPU, 16 smoke)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 256 on CUDA, 16 on CPU, 8 smoke)")
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per side (rounds x chunk; default 50 CUDA, 10 CPU, 2 smoke)",
    )
    ap.add_argument("--chunk", type=int, default=None, help="steps per side per turn (default 5 on CUDA, 1 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="rounds not counted (default 3 on CUDA, 2 on CPU)")
    ap.add_argument("--tasks", default="2,8,40", help="task counts of the project-vs-hand table")
    ap.add_argument("--method-tasks", type=int, default=8, help="tasks of the weighting-method table")
    ap.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="weighting methods (conf/weighting names; name@rep: weighting.source=rep); empty: no method table",
    )
    ap.add_argument("--modes", default="loop,batched", help="weighting.mode values of the gradient methods")
    ap.add_argument("--compile-backend", default=None, help="inductor (default) | aot_eager (default with --smoke)")
    ap.add_argument("--compile-mode", default="default", help="trainer.compile_mode (inductor)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    ap.add_argument(
        "--hand-compile",
        default="whole",
        choices=["whole", "split"],
        help="the hand loop compiles the whole model (default) or, as the project does, encode and decode apart",
    )
    ap.add_argument(
        "--override",
        action="append",
        default=[],
        help="an extra config override for every plan, e.g. trainer.on_nonfinite=ignore (repeatable)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 2 timed steps, aot_eager: checks the script")
    ap.add_argument("--out", default=None, help="JSON path (a .txt beside it); default benchmarks/results/")
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device.startswith("cuda")
    if args.smoke:
        d = {"backbone": "small_cnn", "image_size": 16, "batch": 8, "steps": 2, "chunk": 1, "warmup": 1}
        d["compile_backend"] = "aot_eager"
    elif gpu:
        d = {"backbone": "resnet18", "image_size": 224, "batch": 256, "steps": 50, "chunk": 5, "warmup": 3}
    else:
        d = {"backbone": "small_cnn", "image_size": 32, "batch": 16, "steps": 10, "chunk": 1, "warmup": 2}
    d.setdefault("compile_backend", "inductor")
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.tasks = [int(x) for x in str(args.tasks).split(",") if x]
    args.methods = [m for m in args.methods.split(",") if m]
    args.modes = [m for m in args.modes.split(",") if m]
    args.rounds = max(1, math.ceil(args.steps / args.chunk))
    return args


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_logging()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both sides alike; the reference loop's setting
    buf = io.StringIO()

    def say(*parts) -> None:
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        buf.write(text + "\n")

    info = machine()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    t_all = time.perf_counter()
    say(
        f"gpu_step: {device}, {args.backbone} at {args.image_size} px, batch {args.batch}, bf16 + channels_last, "
        f"{args.rounds} rounds x {args.chunk} steps per side (+{args.warmup} warm-up), compile backend "
        f"{args.compile_backend}"
    )
    with tempfile.TemporaryDirectory() as d:
        pairs = hand_vs_project(args, device, Path(d), say)
        methods = methods_table(args, device, Path(d), say) if args.methods else None

    def ms(v):
        return f"{v * 1e3:.2f}"

    def mb(v):
        return "n/a" if v is None else f"{v:.0f}"

    say("")
    say(
        f"Project step (Trainer.train_step) vs hand-written loop, same model, batch and device data "
        f"({device}, {args.backbone} {args.image_size} px, batch {args.batch}, ew); target <= {TARGET_HAND}:\n"
    )
    say(
        table(
            [
                "config",
                "tasks",
                "project ms/step",
                "hand ms/step",
                "project img/s",
                "hand img/s",
                "ratio",
                "95% CI",
                "met",
                "peak MB project / hand",
                "weights rel diff",
            ],
            [
                [
                    r["config"],
                    r["tasks"],
                    ms(r["project_step_s"]),
                    ms(r["hand_step_s"]),
                    f"{r['project_img_s']:.0f}",
                    f"{r['hand_img_s']:.0f}",
                    f"{r['ratio']:.3f}",
                    f"{r['ratio_ci95'][0]:.3f} .. {r['ratio_ci95'][1]:.3f}",
                    "yes" if r["target_met"] else "no",
                    "n/a" if r["peak_mb"] is None else f"{r['peak_mb']['project']:.0f} / {r['peak_mb']['hand']:.0f}",
                    f"{r['equivalence']['rel']:.1e}",
                ]
                for r in pairs
            ],
        )
    )
    if methods is not None:
        say(
            f"\nWeighting methods at {methods['tasks']} tasks, eager bf16 channels_last, each a real Trainer; the "
            "floor is the hand-written one-backward-per-task step:\n"
        )
        say(
            table(
                [
                    "method",
                    "kind",
                    "ms/step",
                    "img/s",
                    "vs ew",
                    "vs floor",
                    "peak MB",
                    "mem vs ew",
                    "G MB (fp32)",
                    "target",
                    "met",
                ],
                [
                    [
                        r["method"],
                        r["kind"],
                        ms(r["step_s"]),
                        f"{r['img_s']:.0f}",
                        f"{r['vs_ew']:.3f}",
                        f"{r['vs_floor']:.3f}",
                        mb(r["peak_mb"]),
                        "n/a" if r["mem_vs_ew"] is None else f"{r['mem_vs_ew']:.2f}",
                        "-" if r["G_mb_fp32"] is None else f"{r['G_mb_fp32']:.1f}",
                        r.get("target", "-"),
                        "-" if "target_met" not in r else ("yes" if r["target_met"] else "no"),
                    ]
                    for r in methods["rows"]
                ],
            )
        )
    say(
        "\nTiming: "
        + "; ".join(sorted({f"{r['timing']['basis']}" for r in pairs}))
        + (", device synchronised around each chunk" if device.type == "cuda" else "")
        + ("" if device.type == "cuda" else ". Peak memory: n/a on CPU (torch.cuda.max_memory_allocated only)")
        + (
            ""
            if methods is None
            else f". The floor's weights vs ew's after the same steps: rel diff "
            f"{methods['floor_vs_ew_equivalence']['rel']:.1e} (T backward passes summed vs one backward of the sum: "
            "the same update up to rounding, which bf16 and Adam make visible; a figure, not a check)"
        )
        + "."
    )
    out = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / (f"gpu_step_{device.type}{'_smoke' if args.smoke else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    info["loadavg_at_end"] = list(os.getloadavg())
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/gpu_step.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": info,
        "settings": {
            k: getattr(args, k)
            for k in (
                "device",
                "backbone",
                "image_size",
                "batch",
                "steps",
                "chunk",
                "rounds",
                "warmup",
                "tasks",
                "method_tasks",
                "methods",
                "modes",
                "compile_backend",
                "compile_mode",
                "hand_compile",
                "override",
                "smoke",
            )
        }
        | {"threads": torch.get_num_threads(), "precision": "bf16", "channels_last": True},
        "targets": {"project_vs_hand": TARGET_HAND, "rep_vs_ew": TARGET_REP, "exact_mem_vs_ew": TARGET_MEM},
        "project_vs_hand": pairs,
        "methods": methods,
        "script_wall_s": time.perf_counter() - t_all,
    }
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"\nwrote {out} ({time.perf_counter() - t_all:.0f} s)")
    out.with_suffix(".txt").write_text(f"$ {result['command']}\n\n" + buf.getvalue())


if __name__ == "__main__":
    main()
