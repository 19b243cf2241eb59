"""Framework overhead: mtl-train's training step time against a hand-written plain-PyTorch loop
on the same model, batch, data and optimizer, in one process, interleaved.

    .venv/bin/python benchmarks/overhead.py [--steps 31] [--blocks 8] [--rounds 6] [--threads N]

A (mtl-train): the real trainer code path, ``mtl_cli.train.api.train(cfg, run_dir)`` (validate, run
    directory, ``fit``) on the default experiment (small_cnn, 4 tasks, batch 64, AdamW, cosine) with
    ``trainer.max_epochs=1 trainer.max_steps=<steps>``; evaluation is limited to one batch and never
    timed.
B (plain): the same model built by ``mtl_cli.build`` from the validated plan (same seed: same
    initial weights), the same in-memory training tensors indexed with the same seeded permutation
    the trainer's DataLoader draws, the same per-task losses (``task.loss``), summed, backward,
    ``torch.optim.AdamW`` (lr, weight decay from the config; fused where torch has it, as the
    trainer's is by default), ``zero_grad(set_to_none=True)``. No
    logging, no scheduler, no DataLoader.

Clock: torch's global optimizer post-hook (``register_optimizer_step_post_hook``) stamps every
optimizer step of either side, so the trainer is timed without touching its code; the interval
between two steps is one full loop cycle (zero_grad, scheduler, logging check, next batch, forward,
losses, backward, optimizer step). The first step of every fresh model is dropped. The trainer's
logging steps (every ``logger.log_every``) are set apart and their extra cost added back amortized.

1. Step-interleaved (primary): during a real ``fit`` block, the hook runs one plain step after each
   trainer step: A, B, A, B, ... step by step, so both sides see the same machine state (this
   machine may be shared: two torch threads on two cores slow down ~10x while a neighbour runs).
   Per pair: the trainer's cycle and the plain step; ratio of the median per-step times (bootstrap
   95% interval over pairs) and the median of the per-pair ratios.
2. Block-interleaved: alternating blocks (AB, BA, ...) of ``steps`` steps of each side alone,
   round 0 discarded as warm-up; the same per-step statistics, plus the coarse figure: the
   trainer's own ``time_per_step_s`` (summary, train-only clock, first step included) against the
   plain block mean.

Wall clock by default, over the steps during which other processes used < 0.25 core; with
``--threads 1`` the main thread's CPU time (all the work runs there) over all steps. Also: an
equivalence check (both sides 5 steps with ``scheduler=constant``: the trainer's checkpoint and the
plain model hold identical weights, i.e. the same computation on the same batches), each per-step
extra of the trainer timed inside a running loop, and a static audit of the per-step path for host
syncs and prints.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    QUIET,
    ROOT,
    Contention,
    StepClock,
    _machine_busy_s,
    _self_busy_s,
    bootstrap_ratio_ci,
    machine,
    median,
    paired_bootstrap_ci,
    quiet_logging,
    run_train,
    table,
    wait_for_quiet,
    write_results,
)

from mtl_cli.build import build_model, build_tasks, fused_available  # noqa: E402
from mtl_cli.config.compose import compose  # noqa: E402
from mtl_cli.validation import validate  # noqa: E402

BASE_OVERRIDES = [
    "device=cpu",
    "trainer.progress=false",
    "trainer.max_epochs=1",
    "trainer.eval_every=1000",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
TARGET = 1.03


def loader_permutation(n: int, seed: int) -> torch.Tensor:
    """The order the trainer's DataLoader visits the samples in its first epoch (pass 0 of its
    PassSampler, a function of the seed and the pass number only)."""
    from mtl_cli.train.batches import PassSampler

    return PassSampler(n, seed).order(0)


class PlainLoop:
    """The hand-written baseline. Data are loaded once; ``reset`` builds a fresh model."""

    def __init__(self, plan):
        self.plan = plan
        self.train = plan.source.load()["train"]
        self.seed = plan.cfg["seed"]
        self.bs = plan.cfg["trainer"]["batch_size"]
        self.perm = loader_permutation(len(self.train), self.seed)
        self.full_batches = len(self.train) // self.bs
        opt = plan.cfg["optimizer"]
        assert opt["_target_"] == "torch.optim.AdamW", opt
        self.lr, self.wd = opt["lr"], opt["weight_decay"]

    def build(self):
        torch.manual_seed(self.seed)  # what fit's seed_everything does before building
        tasks = build_tasks(self.plan)
        model = build_model(self.plan, tasks)
        model.train()
        params = list(model.parameters())
        # fused where torch has it, as the trainer's optimizer is by default (mtl_cli.build.build_optimizer)
        fused = fused_available(torch.optim.AdamW, params)
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.wd, fused=fused)
        return tasks, model, opt

    def reset(self) -> None:
        self.tasks, self.model, self.opt = self.build()
        self.key = self.tasks[0].input
        self.x_all = self.train.inputs[self.key]
        used = sorted({t.target for t in self.tasks})
        self.ys_all = {k: self.train.targets[k] for k in used}
        self.ms_all = {k: self.train.masks[k] for k in used}
        self.i = 0

    def step(self) -> None:
        b = self.i % self.full_batches
        idx = self.perm[b * self.bs : (b + 1) * self.bs]
        x = self.x_all.index_select(0, idx)
        ys = {k: v.index_select(0, idx) for k, v in self.ys_all.items()}
        ms = {k: v.index_select(0, idx) for k, v in self.ms_all.items()}
        preds = self.model({self.key: x})
        loss = sum(t.loss(preds[t.name], ys[t.target], ms[t.target]) for t in self.tasks)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.i += 1

    def run(self, steps: int):
        self.reset()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps, self.model


def equivalence_check(steps: int = 5) -> dict:
    """Both sides, ``steps`` steps, constant learning rate: compare the weights."""
    from mtl_cli.train.api import train

    cfg = compose(BASE_OVERRIDES + [f"trainer.max_steps={steps}", "scheduler=constant"])
    with tempfile.TemporaryDirectory() as d:
        s = train(cfg, Path(d) / "run")
        ckpt = torch.load(Path(d) / "run" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert s["steps"] == steps and ckpt["step"] == steps
    _, model = PlainLoop(validate(cfg)).run(steps)
    ref = model.state_dict()
    diffs = {
        k: (ckpt["model"][k].double() - v.double()).abs().max().item() for k, v in ref.items() if v.is_floating_point()
    }
    worst = max(diffs, key=diffs.get)
    return {
        "steps": steps,
        "max_abs_weight_diff": diffs[worst],
        "worst_tensor": worst,
        "tensors_compared": len(diffs),
        "ok": diffs[worst] < 1e-4,
    }


# --- 1. step-interleaved: a plain step after every trainer step ------------------------------------


def interleaved_block(cfg, plain: PlainLoop, steps: int, clock) -> list[dict]:
    """One real fit of ``steps`` steps; after each of its optimizer steps the hook runs one plain
    step. Returns per pair k >= 2: the trainer's cycle (end of plain step k-1 to the end of
    trainer step k), the plain step k, the step number, the other processes' cores."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    plain.reset()
    marks: list[tuple[float, float, float, float, float]] = []
    inside = False

    def hook(*_):
        nonlocal inside
        if inside:  # the plain step's own optimizer
            return
        inside = True
        t_in = clock()
        plain.step()
        t_out = clock()
        marks.append((t_in, t_out, time.perf_counter(), _machine_busy_s(), _self_busy_s()))
        inside = False

    handle = register_optimizer_step_post_hook(hook)
    try:
        s = run_train(cfg)
    finally:
        handle.remove()
    assert s["steps"] == steps == len(marks), (s["steps"], len(marks))
    out = []
    for k in range(1, len(marks)):
        lo, hi = max(0, k - 2), min(len(marks) - 1, k + 1)  # +-1 pair: jiffies are coarse
        (_, _, w0, m0, s0), (_, _, w1, m1, s1) = marks[lo], marks[hi]
        foreign = max(0.0, ((m1 - m0) - (s1 - s0)) / (w1 - w0))
        out.append(
            {
                "step": k + 1,
                "mtl_train_s": marks[k][0] - marks[k - 1][1],
                "plain_s": marks[k][1] - marks[k][0],
                "foreign_cores": foreign,
            }
        )
    return out


# --- 2. block-interleaved ------------------------------------------------------------------------------


def block_rounds(cfg, plain: PlainLoop, steps: int, rounds: int, budget_s: float, max_wait: float, cpu_clock: bool):
    def side_a():
        with StepClock() as clock:
            s = run_train(cfg)
        assert s["steps"] == steps, s["steps"]
        return s["time_per_step_s"], clock.intervals()

    def side_b():
        with StepClock() as clock:
            t = plain.run(steps)[0]
        return t, clock.intervals()

    out, steps_by_side = [], {"A": [], "B": []}
    t0 = time.perf_counter()
    for r in range(rounds + 1):  # round 0 = warm-up, discarded
        if r > 3 and time.perf_counter() - t0 > budget_s:
            print(f"  block rounds: time budget of {budget_s:.0f} s spent after {r - 1} rounds", flush=True)
            break
        if r > 0 and not cpu_clock:
            wait_for_quiet(max_wait=max_wait)
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        res, load = {}, {}
        for side in order:
            with Contention() as c:
                res[side], iv = side_a() if side == "A" else side_b()
            load[side] = c.foreign_cores
            if r > 0:
                steps_by_side[side] += [dict(x, round=r) for x in iv]
        out.append(
            {
                "round": r,
                "order": "".join(order),
                "warmup": r == 0,
                "block_mean_s": {"mtl_train": res["A"], "plain": res["B"]},
                "block_foreign_cores": load,
                "quiet_block": all(v is not None and v < QUIET for v in load.values()),
            }
        )
        print(
            f"  block round {r}{' (warm-up)' if r == 0 else ''}: mtl-train {res['A'] * 1e3:.1f} / plain "
            f"{res['B'] * 1e3:.1f} ms/step (block means, wall); other processes "
            f"{_load(load['A'])}/{_load(load['B'])} cores",
            flush=True,
        )
    return out, steps_by_side


def compute_losses(tasks, preds, targets, masks):
    """The per-task losses [T] the way this version of the trainer forms them: ``LossComputer``
    (batched per kind) where it exists, else ``torch.stack`` of the task losses."""
    from mtl_cli.tasks import base

    if hasattr(base, "LossComputer"):
        key = tuple(id(t) for t in tasks)
        if _LC.get("key") != key:
            _LC.update(key=key, fn=base.LossComputer(tasks))
        return _LC["fn"](preds, targets, masks)
    return torch.stack([t.loss(preds[t.name], targets[t.target], masks[t.target]) for t in tasks])


_LC: dict = {}


def component_costs(plan, plain: PlainLoop, steps: int, rounds: int = 3, cpu_clock: bool = False) -> dict:
    """The plain loop run twice over, once as is and once with the trainer's per-step extras
    swapped in (its DataLoader + ``to_device``, which gathers every target of the data; the losses
    [T] formed the trainer's way + ``weighting.combine`` + ``/ accumulate_grad_batches``; the
    on-device loss/weight accumulators; ``scheduler.step``), each extra timed by itself inside the
    running loop (in isolation, tiny calls would mislead: e.g. a gather that wakes sleeping OpenMP
    threads). Medians per step, ms."""
    from mtl_cli.build import build_scheduler, build_weighting
    from mtl_cli.train.batches import make_loader, to_device

    cpu = torch.device("cpu")
    accum = plan.cfg["trainer"]["accumulate_grad_batches"]
    seg: dict[str, list[float]] = {}

    def add(k, v):
        seg.setdefault(k, []).append(v)

    pc = time.thread_time if cpu_clock else time.perf_counter
    for _ in range(rounds):
        for mode in ("plain", "trainer"):
            tasks, model, opt = plain.build()
            weighting = build_weighting(plan, tasks)
            sched, _ = build_scheduler(plan, opt, steps)
            loader = make_loader(plain.train, plain.bs, True, plain.seed, 0, cpu)
            key, used = tasks[0].input, sorted({t.target for t in tasks})
            loss_acc, weight_acc = torch.zeros(len(tasks)), torch.zeros(len(tasks))
            t0 = pc()
            it = iter(loader)
            add(f"{mode}: iterator", pc() - t0)
            for i in range(steps):
                t0 = pc()
                if mode == "trainer":
                    inputs, targets, masks = to_device(next(it), cpu)
                else:
                    idx = plain.perm[i * plain.bs : (i + 1) * plain.bs]
                    inputs = {key: plain.train.inputs[key].index_select(0, idx)}
                    targets = {k: plain.train.targets[k].index_select(0, idx) for k in used}
                    masks = {k: plain.train.masks[k].index_select(0, idx) for k in used}
                t1 = pc()
                preds = model(inputs)
                t2 = pc()
                if mode == "trainer":
                    losses = compute_losses(tasks, preds, targets, masks)
                    total, w = weighting.combine(losses)
                    total = total / accum
                else:
                    total = sum(t.loss(preds[t.name], targets[t.target], masks[t.target]) for t in tasks)
                t3 = pc()
                total.backward()
                t4 = pc()
                if mode == "trainer":
                    loss_acc += losses.detach().float()
                    weight_acc += w.float()
                t5 = pc()
                opt.step()
                opt.zero_grad(set_to_none=True)
                t6 = pc()
                if mode == "trainer":
                    sched.step()
                t7 = pc()
                add(f"{mode}: fetch", t1 - t0)
                add(f"{mode}: combine", t3 - t2)
                add(f"{mode}: accumulate", t5 - t4)
                add(f"{mode}: scheduler", t7 - t6)
                add(f"{mode}: step", t7 - t0)
    med = {k: median(v) * 1e3 for k, v in seg.items()}
    extra = {
        "DataLoader + to_device (all targets) vs index_select (used targets)": med["trainer: fetch"]
        - med["plain: fetch"],
        "losses [T] as the trainer forms them + weighting.combine + / accum vs sum of task.loss": med[
            "trainer: combine"
        ]
        - med["plain: combine"],
        "loss/weight accumulators": med["trainer: accumulate"] - med["plain: accumulate"],
        "scheduler.step": med["trainer: scheduler"] - med["plain: scheduler"],
        "DataLoader iterator creation, per step of a 31-step epoch": (med["trainer: iterator"] - med["plain: iterator"])
        / 31,
    }
    return {
        "segments_ms": med,
        "extra_ms": extra,
        "extra_total_ms": sum(extra.values()),
        "plain_step_ms": med["plain: step"],
    }


# --- static audit of the per-step path --------------------------------------------------------

SYNC_PATTERN = re.compile(
    r"\.item\(|\.tolist\(|(?<![.\w])(bool|print|float|int)\(|\.cpu\(|\.numpy\(|new_tensor\(|"
    r"torch\.tensor\(|\.nonzero\(|\[mask\]|\bbar\.|\.log\("
)


def _grep_source(obj, label: str, start: str | None = None, stop: str | None = None) -> list[dict]:
    lines, first = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj)).resolve().relative_to(Path(__file__).resolve().parent.parent)
    active = start is None
    hits = []
    for off, line in enumerate(lines):
        if start is not None and start in line:
            active = True
        if active:
            code = line.split("#", 1)[0]
            if SYNC_PATTERN.search(code):
                hits.append({"where": f"{path}:{first + off}", "in": label, "code": line.strip()})
        if stop is not None and active and stop in line:
            break
    return hits


def hot_path_audit(plan) -> list[dict]:
    """Every line of the per-step path that matches a host-sync / print pattern (read it, then
    judge: a match on a Python number or a shape is no sync). Follows the trainer as it is now:
    ``Trainer`` methods where the class exists, else the loop inside ``fit``."""
    import importlib

    from mtl_cli.models.base import pool
    from mtl_cli.registry import HEADS, WEIGHTINGS
    from mtl_cli.train import batches, trainer
    from mtl_cli.weighting.base import Weighting

    importlib.reload(trainer)  # the file may have changed since import (shared working tree)
    tasks = build_tasks(plan)
    model = build_model(plan, tasks)
    hits: list[dict] = []
    if hasattr(trainer, "Trainer"):
        T = trainer.Trainer
        for name, note in [
            ("train_epoch", "per-step loop"),
            ("train_step", "every optimizer step"),
            ("forward_backward", "every micro-batch"),
            ("_losses_finite", "every micro-batch"),
            ("_backward", "every micro-batch"),
            ("optimizer_step", "every optimizer step"),
            ("log_train", f"every logger.log_every={plan.cfg['logger']['log_every']} steps"),
        ]:
            if hasattr(T, name):
                hits += _grep_source(getattr(T, name), f"Trainer.{name} ({note})")
    else:
        hits += _grep_source(
            trainer.fit, "fit: per-step loop", "for i, batch in enumerate(train_loader)", "bar.close()"
        )
        hits += _grep_source(trainer.fit, "fit: backward/optimizer_step", "def backward(", "weighting.on_step_end")
        if hasattr(trainer, "_train_record"):
            hits += _grep_source(trainer._train_record, "_train_record (every log_every steps)")
    hits += _grep_source(batches.to_device, "to_device")
    from mtl_cli.data.base import InMemoryDataset

    hits += _grep_source(InMemoryDataset.__getitems__, "InMemoryDataset.__getitems__")
    hits += _grep_source(Weighting.backward, "Weighting.backward")
    hits += _grep_source(Weighting.weighted_backward, "Weighting.weighted_backward")
    hits += _grep_source(Weighting.combine, "Weighting.combine")
    w = WEIGHTINGS.get(plan.cfg["weighting"]["name"])
    hits += _grep_source(w.weights, f"{w.__name__}.weights")
    from mtl_cli.tasks import base as tbase

    for fn_name in ("masked_mean", "masked_column_mean"):
        if hasattr(tbase, fn_name):
            hits += _grep_source(getattr(tbase, fn_name), fn_name)
    if hasattr(tbase, "LossComputer"):
        hits += _grep_source(tbase.LossComputer.__call__, "LossComputer.__call__")
    hits += _grep_source(pool, "pool")
    seen = set()
    for t in tasks:
        k = type(t.kind)
        if k not in seen:
            seen.add(k)
            hits += _grep_source(k.loss, f"{k.__name__}.loss")
            if "fused_loss" in k.__dict__:
                hits += _grep_source(k.fused_loss, f"{k.__name__}.fused_loss")
    hits += _grep_source(type(model).forward, "MTLModel.forward") + _grep_source(type(model).encode, "encode")
    hits += _grep_source(type(model).decode, "decode") + _grep_source(type(model.backbone).forward, "backbone.forward")
    from mtl_cli.models import base as mbase

    if hasattr(mbase, "HeadRunner"):
        hits += _grep_source(mbase.HeadRunner.__call__, "HeadRunner.__call__")
    for name in sorted({t.head["name"] for t in tasks}):
        cls = HEADS.get(name)
        hits += _grep_source(cls.forward, f"{cls.__name__}.forward")
        if "forward_fused" in cls.__dict__:
            hits += _grep_source(cls.forward_fused, f"{cls.__name__}.forward_fused")
    return hits


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def _load(v) -> str:
    return "?" if v is None else f"{v:.2f}"


def _stats(pairs: list[dict], key_a: str, key_b: str, log_every: int, cpu_clock: bool) -> dict:
    """Per-step medians of both sides over the non-logging steps (quiet ones on the wall clock),
    the logging steps' extra cost on side A, ratio, bootstrap interval."""

    def body(x):
        return (x["step"] - 1) % log_every != 0

    def quiet(x):
        return cpu_clock or (x["foreign_cores"] is not None and x["foreign_cores"] < QUIET)

    sel = [x for x in pairs if body(x) and quiet(x)]
    basis = "main-thread CPU time, all steps" if cpu_clock else "wall time, quiet steps"
    if len(sel) < 20:
        sel = [x for x in pairs if body(x)]
        basis = "wall time, ALL steps (too few quiet ones: the machine was busy)"
    a = median([x[key_a] for x in sel])
    b = median([x[key_b] for x in sel])
    logs = [x for x in pairs if not body(x) and (quiet(x) or "ALL" in basis)]
    if key_a != key_b:  # paired (step-interleaved): the log step's excess over its own plain step
        log_cost = (
            median([x[key_a] - x[key_b] for x in logs]) - median([x[key_a] - x[key_b] for x in sel])
            if len(logs) >= 3
            else None
        )
    else:
        log_cost = median([x[key_a] for x in logs]) - a if len(logs) >= 3 else None
    return {
        "basis": basis,
        "steps_used": len(sel),
        "steps_measured": len(pairs),
        "median_step_s": {"mtl_train": a, "plain": b},
        "ratio": a / b,
        "logging_step_extra_s": log_cost,
        "ratio_with_logging": (a + (log_cost or 0.0) / log_every) / b,
        "sel": sel,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=31, help="optimizer steps per block (<= 31: full batches)")
    ap.add_argument("--blocks", type=int, default=8, help="step-interleaved fit blocks (+1 warm-up)")
    ap.add_argument("--rounds", type=int, default=6, help="block-interleaved rounds (+1 warm-up)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=100.0,
        help="time budget of each of the two measurements (at least 3 blocks/rounds each)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument(
        "--max-wait",
        type=float,
        default=5.0,
        help="before each block, wait up to this many seconds for other processes to go quiet",
    )
    ap.add_argument("--no-breakdown", action="store_true", help="skip the in-loop timing of the trainer's extras")
    ap.add_argument("--no-check", action="store_true", help="skip the equivalence check")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    quiet_logging()
    info = machine()
    t_all = time.perf_counter()
    cpu_clock = torch.get_num_threads() == 1  # all the work in the main thread: its CPU clock
    clock = time.thread_time if cpu_clock else time.perf_counter
    clock_name = "main-thread CPU time" if cpu_clock else "wall time"

    check = None if args.no_check else equivalence_check()
    if check is not None:
        print(
            f"equivalence check ({check['steps']} steps, constant lr): max |weight diff| = "
            f"{check['max_abs_weight_diff']:.2e} over {check['tensors_compared']} tensors -> "
            f"{'same computation' if check['ok'] else 'MISMATCH'}",
            flush=True,
        )

    cfg = compose(BASE_OVERRIDES + [f"trainer.max_steps={args.steps}"])
    plan = validate(cfg)
    plain = PlainLoop(plan)
    assert args.steps <= plain.full_batches, "full batches only"
    log_every = plan.cfg["logger"]["log_every"]

    # 1. step-interleaved
    print(f"step-interleaved ({clock_name}):", flush=True)
    pairs, t0 = [], time.perf_counter()
    for blk in range(args.blocks + 1):
        if blk > 3 and time.perf_counter() - t0 > args.budget_s:
            print(f"  time budget of {args.budget_s:.0f} s spent after {blk - 1} blocks", flush=True)
            break
        if blk > 0 and not cpu_clock:
            wait_for_quiet(max_wait=args.max_wait)
        iv = interleaved_block(cfg, plain, args.steps, clock)
        if blk > 0:
            pairs += [dict(x, block=blk) for x in iv]
        body = [x for x in iv if (x["step"] - 1) % log_every != 0]
        print(
            f"  block {blk}{' (warm-up)' if blk == 0 else ''}: median mtl-train "
            f"{_ms(median([x['mtl_train_s'] for x in body]))} / plain {_ms(median([x['plain_s'] for x in body]))} "
            f"ms/step; other processes {_load(median([x['foreign_cores'] for x in iv]))} cores",
            flush=True,
        )
    st1 = _stats(pairs, "mtl_train_s", "plain_s", log_every, cpu_clock)
    sel = st1.pop("sel")
    st1["ratio_ci95"] = paired_bootstrap_ci([x["mtl_train_s"] for x in sel], [x["plain_s"] for x in sel])
    st1["median_pair_ratio"] = median([x["mtl_train_s"] / x["plain_s"] for x in sel])

    # 2. block-interleaved
    print(f"block-interleaved ({clock_name}):", flush=True)
    rounds, by_side = block_rounds(cfg, plain, args.steps, args.rounds, args.budget_s, args.max_wait, cpu_clock)
    key = "cpu_s" if cpu_clock else "s"
    # a pseudo-pair list per side for _stats: the sides ran at different times, so no pairing
    a_list = [
        {"step": x["step"], "mtl_train_s": x[key], "plain_s": float("nan"), "foreign_cores": x["foreign_cores"]}
        for x in by_side["A"]
    ]
    b_list = [
        {"step": x["step"], "mtl_train_s": x[key], "plain_s": float("nan"), "foreign_cores": x["foreign_cores"]}
        for x in by_side["B"]
    ]
    sa = _stats(a_list, "mtl_train_s", "mtl_train_s", log_every, cpu_clock)
    sb = _stats(b_list, "mtl_train_s", "mtl_train_s", log_every, cpu_clock)
    a2, b2 = sa["median_step_s"]["mtl_train"], sb["median_step_s"]["mtl_train"]
    kept = [x for x in rounds if not x["warmup"]]
    qblocks = [x for x in kept if x["quiet_block"]]
    cbasis = qblocks if len(qblocks) >= 3 else kept
    ca = median([x["block_mean_s"]["mtl_train"] for x in cbasis])
    cb = median([x["block_mean_s"]["plain"] for x in cbasis])
    st2 = {
        "basis": sa["basis"] if "ALL" in sa["basis"] else sb["basis"],
        "steps_used": {"mtl_train": sa["steps_used"], "plain": sb["steps_used"]},
        "median_step_s": {"mtl_train": a2, "plain": b2},
        "ratio": a2 / b2,
        "ratio_ci95": bootstrap_ratio_ci(
            [x["mtl_train_s"] for x in sa.pop("sel")], [x["mtl_train_s"] for x in sb.pop("sel")]
        ),
        "logging_step_extra_s": sa["logging_step_extra_s"],
        "ratio_with_logging": (a2 + (sa["logging_step_extra_s"] or 0.0) / log_every) / b2,
        "coarse": {
            "basis": f"{len(cbasis)} {'quiet' if cbasis is qblocks else 'all'} rounds, wall",
            "median_block_mean_s": {"mtl_train": ca, "plain": cb},
            "ratio": ca / cb,
        },
        "rounds": rounds,
    }

    comp = None if args.no_breakdown else component_costs(plan, plain, args.steps, cpu_clock=cpu_clock)
    audit = hot_path_audit(plan)
    met = st1["ratio_with_logging"] <= TARGET

    print()
    print(
        f"Default experiment (small_cnn, 4 tasks, batch {plan.cfg['trainer']['batch_size']}), {args.steps} steps "
        f"per block, torch {info['torch']}, {torch.get_num_threads()} threads, {clock_name}\n"
    )
    rows = [
        [
            "1. step-interleaved (A,B,A,B... per step)",
            f"{st1['median_step_s']['mtl_train'] * 1e3:.2f}",
            f"{st1['median_step_s']['plain'] * 1e3:.2f}",
            f"{st1['ratio']:.3f}",
            f"{st1['ratio_ci95'][0]:.3f} .. {st1['ratio_ci95'][1]:.3f}",
            f"{st1['ratio_with_logging']:.3f}",
            f"{st1['steps_used']} pairs ({st1['basis']})",
        ],
        [
            "2. block-interleaved (AB, BA, ... blocks)",
            f"{a2 * 1e3:.2f}",
            f"{b2 * 1e3:.2f}",
            f"{st2['ratio']:.3f}",
            f"{st2['ratio_ci95'][0]:.3f} .. {st2['ratio_ci95'][1]:.3f}",
            f"{st2['ratio_with_logging']:.3f}",
            f"{st2['steps_used']['mtl_train']} + {st2['steps_used']['plain']} steps ({st2['basis']})",
        ],
        [
            "2'. coarse: summary time_per_step_s vs block mean",
            f"{ca * 1e3:.2f}",
            f"{cb * 1e3:.2f}",
            f"{ca / cb:.3f}",
            "-",
            "(incl.)",
            st2["coarse"]["basis"],
        ],
    ]
    print(
        table(
            [
                "measurement",
                "mtl-train ms/step",
                "plain ms/step",
                "ratio",
                "95% CI",
                f"ratio incl. logging every {log_every}",
                "sample",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            ["target", "primary (1., incl. logging)", "median per-pair ratio", "met"],
            [
                [
                    f"<= {TARGET}",
                    f"{st1['ratio_with_logging']:.3f}",
                    f"{st1['median_pair_ratio']:.3f}",
                    "yes" if met else "no",
                ]
            ],
        )
    )
    if comp is not None:
        print(
            f"\nWhat the trainer adds per step, each extra timed inside a running loop (median ms, {clock_name}; "
            f"plain step {comp['plain_step_ms']:.1f} ms):\n"
        )
        rows = [[k, f"{v:+.3f}", f"{100 * v / comp['plain_step_ms']:+.2f}%"] for k, v in comp["extra_ms"].items()]
        total = comp["extra_total_ms"]
        rows.append(["total", f"{total:+.3f}", f"{100 * total / comp['plain_step_ms']:+.2f}%"])
        print(table(["extra", "ms/step", "of a step"], rows))
    lc = st1["logging_step_extra_s"]
    print(
        f"\nLogging (every {log_every} steps: .tolist() sync, record, metrics.jsonl line): {_ms(lc)} ms extra "
        f"on a logging step, {_ms(lc / log_every if lc is not None else None)} ms/step amortized."
    )
    print("\nPer-step path, lines matching a host-sync/print pattern (judge each; see docs/benchmarks.md):\n")
    print(table(["where", "in", "code"], [[h["where"], h["in"], f"`{h['code']}`"] for h in audit]))
    name = "overhead" if args.threads is None else f"overhead_threads{args.threads}"
    out = write_results(
        name,
        {
            "machine": info,
            "config": {
                "overrides": BASE_OVERRIDES + [f"trainer.max_steps={args.steps}"],
                "steps_per_block": args.steps,
                "batch_size": plan.cfg["trainer"]["batch_size"],
                "tasks": list(plan.tasks),
                "backbone": plan.cfg["backbone"]["name"],
                "threads": torch.get_num_threads(),
                "clock": clock_name,
            },
            "equivalence_check": check,
            "step_interleaved": st1,
            "block_interleaved": st2,
            "target": TARGET,
            "target_met": met,
            "component_costs": comp,
            "hot_path_audit": audit,
            "pairs": pairs,
            "block_steps": by_side,
            "script_wall_s": time.perf_counter() - t_all,
        },
    )
    print(f"\nwrote {out.relative_to(ROOT)} ({time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
