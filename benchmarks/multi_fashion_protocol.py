"""MultiFashion under the protocol of Pareto MTL's released code (``experiment=multi_fashion_lenet``):
single-task models at two capacities against shared models, over seeds, on the full data.

The protocol (Lin et al., "Pareto Multi-Task Learning", NeurIPS 2019; github.com/Xi-L/ParetoMTL,
``multiMNIST/train.py`` and ``model_lenet.py``): 36 x 36 canvases, 120,000 training and 20,000 test
samples (here ``data.pairs_per_item=2`` on Fashion-MNIST's 60,000 / 10,000 items; 10% of the
training items are held out for validation), their LeNet (conv 10@9x9, conv 20@5x5, fc 500 -> 50,
a linear head per task), SGD lr 1e-3 momentum 0.9, batches of 256, 100 epochs, the learning rate
halved every 15 epochs. Test figures: the best validation epoch of each run.

Cells, each over ``--seeds``:

- ``stl``: one single-task run per task, each with the shared model's encoder (the same capacity
  per task: the pair has twice the shared model's parameters);
- ``stl_half``: one single-task run per task with a smaller encoder (``backbone.channels=[7,14]
  backbone.dim=35``): the pair has about the shared model's parameters;
- one shared model per weighting method (``--methods``, default ew uw mgda_ub: equal weighting, a
  loss-based method and Sener & Koltun's MGDA-UB).

Every run is its own ``mtl-train`` process; ``--jobs`` of them at a time (default: all at once, which
is what keeps a GPU busy with models this small). ``--time-budget-s``: first all runs together for
``--calibrate-steps`` steps, then the epochs (at most ``--epochs``) that fit the budget (the main runs'
wall time; the calibration comes on top) at the slowest run's measured step time; the learning-rate
step scales with them (15 of 100 epochs). The output says which epochs ran.

Tables (``<out>/multi_fashion_protocol.md`` and ``.json``): test accuracy per task, mean ± std over
seeds, with the parameters of each model (pair); Δm (%, accuracy and F1 of both tasks, mtl_cli's
definition) of each shared model against both single-task cells of the same seed; ``mtl-report``'s
leaderboard over all runs (``<out>/report.md``). Every number is read from the runs' summary.json.

    python benchmarks/multi_fashion_protocol.py --root /tmp/fm --device cuda --time-budget-s 420
    python benchmarks/multi_fashion_protocol.py --root /tmp/fm --device cpu --seeds 0 --epochs 1 \\
        --train-size 600 --test-size 200 --methods ew          # a check of the script (~1 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data import markdown_table, mtl_report, pm, task_test_metrics, update_docs  # noqa: E402
from multi_fashion import prepare_root  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("left", "right")
STL_CELLS = {"stl": [], "stl_half": ["backbone.channels=[7,14]", "backbone.dim=35"]}
METHODS = ("ew", "uw", "mgda_ub")
PROTOCOL_EPOCHS, PROTOCOL_STEP = 100, 15  # Pareto MTL: 100 epochs, lr halved at 15, 30, ..., 90


def jobs_of(a: argparse.Namespace, out: Path) -> list[tuple[str, int, str | None, Path, list[str]]]:
    """(cell, seed, task or None, run_dir, overrides) of every run."""
    jobs = []
    for seed in a.seeds:
        for cell, ov in STL_CELLS.items():
            for task in TASKS:
                others = [f"tasks.{t}.enabled=false" for t in TASKS if t != task]
                jobs.append((cell, seed, task, out / cell / f"seed{seed}" / task, [*ov, *others]))
        for m in a.methods:
            jobs.append((m, seed, None, out / m / f"seed{seed}", [f"weighting={m}"]))
    return jobs


def common_overrides(a: argparse.Namespace) -> list[str]:
    ov = [
        "experiment=multi_fashion_lenet",
        f"data.root={a.root.resolve()}",
        f"device={a.device}",
        "trainer.progress=false",
        "logger.console_summary=false",
        "overwrite=true",
    ]
    if a.train_size:
        ov.append(f"data.train_size={a.train_size}")
    if a.test_size:
        ov.append(f"data.test_size={a.test_size}")
    if a.device.startswith("cuda"):
        ov.append("trainer.data_on_device=true")
    return ov + list(a.extra)


def run_all(jobs: list, common: list[str], extra: list[str], parallel: int, log_dir: Path) -> dict[Path, float]:
    """Run every job as its own ``mtl-train`` process, ``parallel`` at a time; returns each run's
    wall time. A failed run stops the benchmark with its log's end."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    pending, running, walls = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < parallel:
            cell, seed, task, run_dir, ov = pending.pop(0)
            args = [*common, *ov, f"seed={seed}", f"run_dir={run_dir}", *extra]
            log = log_dir / f"{cell}_seed{seed}{'_' + task if task else ''}.log"
            fh = open(log, "w")
            fh.write("$ mtl-train " + " ".join(args) + "\n")
            fh.flush()
            proc = subprocess.Popen([sys.executable, "-m", "mtl_cli.cli.train", *args], stdout=fh, stderr=fh, env=env)
            running.append((proc, fh, log, run_dir, time.perf_counter()))
        time.sleep(0.5)
        for item in list(running):
            proc, fh, log, run_dir, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            fh.close()
            walls[run_dir] = time.perf_counter() - t0
            if proc.returncode != 0:
                for p, *_ in running:
                    p.terminate()
                sys.exit(f"run failed (exit {proc.returncode}): {log}\n" + log.read_text()[-3000:])
    return walls


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def calibrate(a, jobs, common, out: Path) -> tuple[int, dict]:
    """All runs together for ``--calibrate-steps`` steps; the epochs that fit ``--time-budget-s``."""
    cal = [(c, s, t, out / "calibration" / d.relative_to(out), ov) for c, s, t, d, ov in jobs]
    extra = [
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={a.calibrate_steps}",
        "trainer.limit_val_batches=4",
        "trainer.limit_test_batches=4",
    ]
    t0 = time.perf_counter()
    walls = run_all(cal, common, extra, a.jobs or len(cal), out / "calibration" / "logs")
    wall = time.perf_counter() - t0
    step = max(summary(d)["time_per_step_s"] for *_, d, _ in cal)
    overhead = max(walls[d] - summary(d)["train_time_s"] for *_, d, _ in cal)  # start, data, test
    d0 = cal[0][3]
    n_train = json.loads((d0 / "data.json").read_text())["splits"]["train"]
    steps_per_epoch = math.ceil(n_train / a.batch_size)
    # + validation and the per-epoch work, and a margin: the runs start a few seconds apart, so
    # their calibration steps do not all overlap (the step time under full load is higher)
    epoch_s = steps_per_epoch * step * 1.3
    epochs = max(1, min(a.epochs, int((a.time_budget_s - 2 * overhead) / epoch_s)))
    info = {
        "wall_s": wall,
        "slowest_step_s": step,
        "overhead_s": overhead,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s_estimate": epoch_s,
        "epochs": epochs,
    }
    print(f"calibration: {json.dumps(info)}", flush=True)
    return epochs, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data"), help="torchvision root (FashionMNIST/raw inside)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multi_fashion_protocol")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cuda also keeps the data on the GPU)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=PROTOCOL_EPOCHS, help="epochs (the most, with --time-budget-s)")
    ap.add_argument("--time-budget-s", type=float, default=None, help="fit the epochs to this wall time")
    ap.add_argument("--calibrate-steps", type=int, default=300, help="steps of each calibration run")
    ap.add_argument("--jobs", type=int, default=0, help="runs at a time (0: all)")
    ap.add_argument("--train-size", type=int, default=None, help="base train items used (default all 60000)")
    ap.add_argument("--test-size", type=int, default=None, help="base test items used (default all 10000)")
    ap.add_argument("--batch-size", type=int, default=256, help="the protocol's (set in the experiment)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md (its marked block)")
    ap.add_argument(
        "--docs-from",
        type=Path,
        nargs="+",
        default=None,
        help="train nothing: write the tables of these finished benchmarks' multi_fashion_protocol.json "
        "(in this order) into docs/benchmarks.md",
    )
    a = ap.parse_args()
    if a.docs_from:
        texts = [docs_text(json.loads((d / "multi_fashion_protocol.json").read_text())) for d in a.docs_from]
        update_docs("multi_fashion_protocol.py", "\n\n".join(texts))
        return
    prepare_root(a.root)
    out = a.out.resolve()
    jobs = jobs_of(a, out)
    common = common_overrides(a)
    t0 = time.perf_counter()
    calibration = None
    epochs = a.epochs
    if a.time_budget_s:
        epochs, calibration = calibrate(a, jobs, common, out)
    step_size = max(1, round(PROTOCOL_STEP * epochs / PROTOCOL_EPOCHS))
    sched = [f"trainer.max_epochs={epochs}", f"scheduler.step_size={step_size}"]
    print(f"{len(jobs)} runs, {epochs} epochs, lr halved every {step_size}", flush=True)
    walls = run_all(jobs, common, sched, a.jobs or len(jobs), out / "logs")

    cells: dict[str, dict] = {}
    for cell, seed, task, run_dir, _ in jobs:
        c = cells.setdefault(cell, {"seeds": {}})
        d = run_dir.parent if task else run_dir
        if seed not in c["seeds"]:
            c["seeds"][seed] = {"run_dir": str(d), "wall_s": 0.0, "parameters": 0}
        s = summary(run_dir)
        c["seeds"][seed]["wall_s"] += walls[run_dir]
        c["seeds"][seed]["parameters"] += sum(s["parameters"].values())
        c["seeds"][seed]["epochs"] = s["epochs"]
    directions = {t: {"accuracy": "higher", "f1": "higher"} for t in TASKS}
    from mtl_cli.results.delta_m import delta_m

    for c in cells.values():
        for r in c["seeds"].values():
            r["test"] = task_test_metrics(Path(r["run_dir"]))
    for name, c in cells.items():
        for seed, r in c["seeds"].items():
            for ref in STL_CELLS:
                if name not in STL_CELLS:
                    base = cells[ref]["seeds"][seed]["test"]
                    r[f"delta_m_vs_{ref}"] = delta_m(r["test"], base, directions)["delta_m"]
    rows = []
    for name, c in cells.items():
        rs = list(c["seeds"].values())
        rows.append(
            [
                name,
                f"{rs[0]['parameters']:,}",
                pm([r["test"]["left"]["accuracy"] for r in rs], 2, 100),
                pm([r["test"]["right"]["accuracy"] for r in rs], 2, 100),
                *(("—" if name in STL_CELLS else pm([r[f"delta_m_vs_{ref}"] for r in rs], 2)) for ref in STL_CELLS),
            ]
        )
    headers = ["model", "parameters", "left accuracy %", "right accuracy %", "Δm % vs stl", "Δm % vs stl_half"]
    table = markdown_table(headers, rows)
    head = (
        f"{len(a.seeds)} seed(s) ({', '.join(map(str, a.seeds))}), {epochs} epochs (lr halved every {step_size}), "
        f"device {a.device}, mean ± std over seeds; all runs at once: {time.perf_counter() - t0:.0f} s"
    )
    report = mtl_report([out / n for n in cells], out, "weighting.name,backbone.channels,tasks.left.enabled")
    result = {
        "epochs": epochs,
        "step_size": step_size,
        "seeds": a.seeds,
        "device": a.device,
        "calibration": calibration,
        "cells": cells,
        "table": table,
        "header": head,
        "report": str(report) if report else None,
        "wall_s": time.perf_counter() - t0,
    }
    (out / "multi_fashion_protocol.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "multi_fashion_protocol.md").write_text(docs_text(result) + "\n")
    print(docs_text(result), flush=True)
    if a.docs:
        update_docs("multi_fashion_protocol.py", docs_text(result))


def docs_text(result: dict) -> str:
    return result["header"] + "\n\n" + result["table"]


if __name__ == "__main__":
    main()
