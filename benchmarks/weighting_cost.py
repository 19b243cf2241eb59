"""Step time and memory of every weighting method relative to equal weighting (``ew``), at 2, 8
and 40 tasks, on the same model and batch, in one process.

    .venv/bin/python benchmarks/weighting_cost.py [--tasks 2 8 40] [--steps 12] [--rounds 3]
                                                  [--methods ew mgda ...] [--every 10]

Model: the default small CNN on 32x32 shapes images, batch 64, T binary tasks on target
``large`` (``large_00`` ...). Each method runs ``Trainer.train_step`` (the real hot path: forward,
losses, ``weighting.backward``, optimizer step) on one fixed batch; rounds interleave the
methods (ew, m1, m2, ..., ew, m1, ...) so that drifts of the machine hit all of them alike; the
median step time over all rounds is compared with ew's. With ``--every K`` each gradient method
is also timed with ``weighting.every=K``. Memory: on CUDA the peak allocated memory of the step;
on a CPU, the bytes the engine holds per step (the task-gradient matrix, T x P floats, and its
Gramian), computed from the shapes. Results: benchmarks/results/weighting_cost.json and .txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Contention, quiet_logging, table, write_results  # noqa: E402

BASE = [
    "trainer.progress=false",
    "logger.log_every=1000000",
    "trainer.max_epochs=1",
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
]


def make_plan(n_tasks: int, method: str, extra: list[str]):
    from mtl_cli.config.compose import compose
    from mtl_cli.validation import validate

    cfg = OmegaConf.to_container(compose([*BASE, f"weighting={method}", *extra]), resolve=True)
    cfg["tasks"] = {f"large_{i:02d}": {"kind": "binary", "target": "large"} for i in range(n_tasks)}
    return validate(cfg)


def make_trainer(plan):
    from mtl_cli.train.sampling import MicroBatch, batch_size_of
    from mtl_cli.train.trainer import Trainer

    tr = Trainer(plan, Path(tempfile.mkdtemp()))
    batch = next(iter(tr.stream.loaders["data"]))
    return tr, [MicroBatch(batch, ("data",), batch_size_of(batch))]  # one optimizer step of one micro-batch


def time_steps(tr, batch, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        tr.train_step(batch)
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def engine_bytes(tr, n_tasks: int) -> int | None:
    from mtl_cli.weighting.engine import GradientWeighting

    w = tr.weighting
    if not isinstance(w, GradientWeighting):
        return 0
    if w.source == "rep":
        batch_rep = None
        return batch_rep  # depends on the batch; reported as n/a
    p = sum(x.numel() for x in tr.model.shared_parameters() if x.requires_grad)
    return 4 * (n_tasks * p + n_tasks * n_tasks)


def main() -> None:
    from mtl_cli.errors import UserError
    from mtl_cli.registry import WEIGHTINGS
    from mtl_cli.weighting.engine import GradientWeighting

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", type=int, default=[2, 8, 40])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per method per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--every", type=int, default=10, help="also time gradient methods with weighting.every=K (0: no)")
    args = ap.parse_args()
    quiet_logging()
    methods = args.methods or WEIGHTINGS.names()
    variants = [(m, []) for m in methods]
    if args.every:
        variants += [
            (m, [f"weighting.every={args.every}"]) for m in methods if issubclass(WEIGHTINGS.get(m), GradientWeighting)
        ]
    results = []
    for n_tasks in args.tasks:
        trainers = {}
        for m, extra in [("ew", []), *[v for v in variants if v[0] != "ew"]]:
            key = m + (f" every={args.every}" if extra else "")
            torch.manual_seed(0)
            try:
                plan = make_plan(n_tasks, m, extra)
            except UserError as e:  # e.g. every > 1 for a method that returns a direction
                print(f"{n_tasks:>3} tasks  {key:<24} refused: {e.problems[0].message}", flush=True)
                continue
            trainers[key] = (*make_trainer(plan), m, extra)
        times = {k: [] for k in trainers}
        with Contention() as c:
            for r in range(args.rounds):
                for key, (tr, batch, _, _) in trainers.items():
                    if r == 0:
                        time_steps(tr, batch, 2)  # warm-up
                    times[key] += time_steps(tr, batch, args.steps)
        ew = statistics.median(times["ew"])
        for key, (tr, _, _m, _extra) in trainers.items():
            med = statistics.median(times[key])
            results.append(
                {
                    "tasks": n_tasks,
                    "method": key,
                    "ms_per_step": 1000 * med,
                    "ratio_to_ew": med / ew,
                    "engine_bytes": engine_bytes(tr, n_tasks),
                    "foreign_cores": c.foreign_cores,
                }
            )
            print(f"{n_tasks:>3} tasks  {key:<24} {1000 * med:8.1f} ms  x{med / ew:.2f}", flush=True)
        del trainers
    rows = []
    for n_tasks in args.tasks:
        for r in (x for x in results if x["tasks"] == n_tasks):
            mb = "n/a" if r["engine_bytes"] is None else f"{r['engine_bytes'] / 2**20:.1f}"
            rows.append([n_tasks, r["method"], f"{r['ms_per_step']:.1f}", f"{r['ratio_to_ew']:.2f}", mb])
    text = table(["tasks", "method", "ms/step", "x ew", "engine MiB"], rows)
    print("\n" + text)
    write_results("weighting_cost", {"results": results, "args": vars(args)})
    (RESULTS / "weighting_cost.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
