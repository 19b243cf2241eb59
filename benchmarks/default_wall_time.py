"""Wall time of the default experiment on this machine, start-up included, and its test metrics.

    .venv/bin/python benchmarks/default_wall_time.py [--runs 2] [--startup-runs 3]

- start-up: ``.venv/bin/mtl-train --cfg job`` (interpreter, CLI imports, command-line check, Hydra
  composition, print the config, exit; mtl-train imports torch only when a run starts, so this is
  the CLI alone), ``python -c "import mtl_cli.train.api"`` (the training stack: torch, torchmetrics,
  mtl_cli) and ``python -c "import torch"``;
- the default experiment: ``.venv/bin/mtl-train trainer.progress=false run_dir=<tmp>`` as a
  subprocess, ``--runs`` times, sequentially; wall seconds of the whole process, and from each run's
  summary.json: time per step (train only), train time, in-process wall time (from building the
  Trainer to the summary), so that the wall time splits into: outside the Trainer (interpreter,
  imports, Hydra, validation, run directory, exit), training steps, and the rest of the Trainer
  (data generation, model build, 10 validations, checkpoints, test); steps, and the test
  metrics of the selected checkpoint: shape accuracy (chance 25%), present F1, size MAE and R²,
  segmentation mIoU;
- a trivial reference for the metrics: the "prior" predictor (constant output from the training
  split's statistics: class frequencies, label prevalences, target mean), scored on the test split
  by mtl_cli's own ``evaluate`` and task metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Contention, machine, median, table, write_results  # noqa: E402

MTL_TRAIN = ROOT / ".venv" / "bin" / "mtl-train"
PYTHON = ROOT / ".venv" / "bin" / "python"

# (task, metric, label, chance/reference text)
REPORTED = [
    ("shape", "accuracy", "shape accuracy", "chance 0.25"),
    ("present", "f1", "present F1 (macro)", None),
    ("size", "mae", "size MAE", None),
    ("size", "r2", "size R²", "0 = predicting the mean"),
    ("segmentation", "miou", "segmentation mIoU", None),
]


# phases of the start-up inside one process (each import cold, as in a fresh mtl-train)
STARTUP_PHASES = """
import json, time
t0 = time.perf_counter()
import mtl_cli.train.api
t1 = time.perf_counter()
from mtl_cli.config.compose import compose
cfg = compose([])
t2 = time.perf_counter()
import torch._dynamo  # what the first torch.optim optimizer imports (validate builds one to check arguments)
t3 = time.perf_counter()
from mtl_cli.validation import validate
validate(cfg)
t4 = time.perf_counter()
print(json.dumps({"import training stack (torch, torchmetrics, mtl_cli)": t1 - t0, "Hydra compose": t2 - t1,
                  "import torch._dynamo (first torch.optim optimizer)": t3 - t2, "validate (the rest)": t4 - t3}))
"""
PLAIN_FLOOR = "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"


def timed(cmd: list[str], cwd: Path, env=None) -> tuple[float, float | None, subprocess.CompletedProcess]:
    with Contention() as c:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-3000:])
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return wall, c.foreign_cores, p


class PriorModel(torch.nn.Module):
    """Constant predictions from the training split's statistics, in each task's output format."""

    def __init__(self, tasks, train):
        super().__init__()
        self.tasks, self.out = tasks, {}
        for t in tasks:
            y, m = train.targets[t.target], train.masks[t.target]
            y = y[m]
            kind = t.kind.name
            if kind in ("classification", "segmentation"):
                valid = y[y != (t.ignore_index if t.ignore_index is not None else -1)] if kind == "segmentation" else y
                freq = torch.bincount(valid.flatten().long(), minlength=t.num_classes).double() + 1e-9
                logits = (freq / freq.sum()).log().float()
                self.out[t.name] = (logits, kind == "segmentation", tuple(t.spec.shape))
            elif kind in ("binary", "multilabel"):
                p = y.float().mean(0).clamp(1e-6, 1 - 1e-6)
                self.out[t.name] = (torch.logit(p).reshape(-1), False, ())
            elif kind in ("regression", "dense_regression"):
                mean = torch.nanmean(y.float(), 0)
                self.out[t.name] = (mean.reshape(-1) if kind == "regression" else mean, kind == "dense_regression", ())
            else:
                raise ValueError(kind)

    def forward(self, inputs):
        b = next(iter(inputs.values())).shape[0]
        preds = {}
        for name, (v, dense, shape) in self.out.items():
            if dense and v.dim() == 1:  # segmentation: class logits at every pixel
                preds[name] = v[None, :, None, None].expand(b, v.shape[0], *shape[-2:])
            else:
                preds[name] = v.expand(b, *v.shape)
        return preds


def prior_baseline() -> dict:
    from mtl_cli.build import build_tasks
    from mtl_cli.config.compose import compose
    from mtl_cli.train.batches import make_loader
    from mtl_cli.train.evaluate import evaluate
    from mtl_cli.validation import validate

    plan = validate(compose([]))
    tasks = build_tasks(plan)
    splits = plan.source.load()
    loader = make_loader(splits["test"], 256, False, 0, 0, torch.device("cpu"))
    return evaluate(PriorModel(tasks, splits["train"]), loader, tasks, torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="full default-experiment runs")
    ap.add_argument("--startup-runs", type=int, default=3, help="runs of `mtl-train --cfg job`")
    args = ap.parse_args()
    info = machine()
    t_all = time.perf_counter()
    env = None  # the caller's environment, as a user's shell would pass it

    startup, torch_import, cached, stack_import, floor, phases = [], [], [], [], [], []
    # PYTHONDONTWRITEBYTECODE=1 in this environment means mtl_cli (installed editable, no
    # __pycache__) is compiled from source at every start; measure also with a bytecode cache kept
    # outside the tree (PYTHONPYCACHEPREFIX), warmed by one untimed run.
    pyc = tempfile.TemporaryDirectory()
    env_cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env_cached["PYTHONPYCACHEPREFIX"] = pyc.name
    timed([str(MTL_TRAIN), "--cfg", "job"], ROOT, env_cached)
    for _ in range(args.startup_runs):
        w, load, _ = timed([str(MTL_TRAIN), "--cfg", "job"], ROOT, env)
        startup.append({"wall_s": w, "foreign_cores": load})
        w, load, _ = timed([str(MTL_TRAIN), "--cfg", "job"], ROOT, env_cached)
        cached.append({"wall_s": w, "foreign_cores": load})
        w, load, _ = timed([str(PYTHON), "-c", "import torch"], ROOT, env)
        torch_import.append({"wall_s": w, "foreign_cores": load})
        w, load, _ = timed([str(PYTHON), "-c", "import mtl_cli.train.api"], ROOT, env)
        stack_import.append({"wall_s": w, "foreign_cores": load})
        w, load, _ = timed([str(PYTHON), "-c", PLAIN_FLOOR], ROOT, env)
        floor.append({"wall_s": w, "foreign_cores": load})
        _, _, p = timed([str(PYTHON), "-c", STARTUP_PHASES], ROOT, env)
        phases.append(json.loads(p.stdout.strip().splitlines()[-1]))
    pyc.cleanup()
    print(
        f"start-up: mtl-train --cfg job  min {min(x['wall_s'] for x in startup):.2f} s; import mtl_cli.train.api "
        f"min {min(x['wall_s'] for x in stack_import):.2f} s; import torch min "
        f"{min(x['wall_s'] for x in torch_import):.2f} s",
        flush=True,
    )

    runs = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.runs):
            run_dir = Path(d) / f"run{i}"
            cmd = [str(MTL_TRAIN), "trainer.progress=false", f"run_dir={run_dir}"]
            w, load, p = timed(cmd, ROOT, env)
            s = json.loads((run_dir / "summary.json").read_text())
            runs.append(
                {
                    "wall_s": w,
                    "foreign_cores": load,
                    "steps": s["steps"],
                    "epochs": s["epochs"],
                    "selected_epoch": s["selected_epoch"],
                    "time_per_step_s": s["time_per_step_s"],
                    "train_time_s": s["train_time_s"],
                    "in_process_wall_s": s["wall_time_s"],
                    "peak_memory_mb": s["peak_memory_mb"],
                    "objective": s["objective"]["value"],
                    "test": s["test"],
                }
            )
            print(
                f"run {i}: {w:.1f} s wall, {s['time_per_step_s'] * 1e3:.1f} ms/step, other processes used "
                f"{'?' if load is None else f'{load:.2f}'} cores",
                flush=True,
            )
    cmd_shown = ".venv/bin/mtl-train trainer.progress=false run_dir=<tmp>/run<i>"
    prior = prior_baseline()

    walls = [r["wall_s"] for r in runs]
    print(
        f"\nDefault experiment: `{cmd_shown}` x{args.runs} (shapes 2000/500/500, small_cnn, 4 tasks, "
        f"10 epochs x 32 steps, batch 64), {info['nproc']} CPUs, torch {info['torch']}, "
        f"{info['torch_num_threads']} threads\n"
    )

    def mm(vals, fmt="{:.1f}", scale=1.0):
        vals = list(vals)
        return [fmt.format(min(vals) * scale), fmt.format(median(vals) * scale)]

    rows = [
        ["process wall time (s)", *mm(walls)],
        [
            "  outside the Trainer: interpreter, imports, Hydra, validation, exit (s)",
            *mm(r["wall_s"] - r["in_process_wall_s"] for r in runs),
        ],
        ["  Trainer (summary wall_time_s) (s)", *mm(r["in_process_wall_s"] for r in runs)],
        ["    training steps (summary train_time_s) (s)", *mm(r["train_time_s"] for r in runs)],
        [
            "    rest: data, build, 10 x validation, checkpoints, test (s)",
            *mm(r["in_process_wall_s"] - r["train_time_s"] for r in runs),
        ],
        ["time per step, train only (ms)", *mm((r["time_per_step_s"] for r in runs), scale=1e3)],
        ["start-up: `mtl-train --cfg job` (s)", *mm((x["wall_s"] for x in startup), "{:.2f}")],
        ["  same, with a bytecode cache (PYTHONPYCACHEPREFIX) (s)", *mm((x["wall_s"] for x in cached), "{:.2f}")],
        [
            "`python -c 'import mtl_cli.train.api'`: training stack imports (s)",
            *mm((x["wall_s"] for x in stack_import), "{:.2f}"),
        ],
        ["`python -c 'import torch'` (s)", *mm((x["wall_s"] for x in torch_import), "{:.2f}")],
        ["plain-PyTorch floor: import torch + first AdamW (s)", *mm((x["wall_s"] for x in floor), "{:.2f}")],
    ]
    phase_rows = [[k, *mm((ph[k] for ph in phases), "{:.2f}")] for k in phases[0]]
    print(table(["quantity", "min", "median"], rows))
    print("\nStart-up inside one fresh process (s):\n")
    print(table(["phase", "min", "median"], phase_rows))
    print()
    mrows = []
    for task, metric, label, ref in REPORTED:
        vals = [r["test"][task][metric] for r in runs]
        pv = prior[task][metric]
        mrows.append(
            [label, " / ".join(f"{v:.4f}" for v in vals), f"{pv:.4f}" if not math.isnan(pv) else "nan", ref or ""]
        )
    print(table(["test metric (selected checkpoint)", "runs", "prior predictor", "reference"], mrows))
    print(
        f"\nsteps {runs[0]['steps']}, selected epochs {[r['selected_epoch'] for r in runs]}, "
        f"peak RSS {max(r['peak_memory_mb'] for r in runs):.0f} MB"
    )
    out = write_results(
        "default_wall_time",
        {
            "machine": info,
            "train_command": cmd_shown,
            "startup": {
                "command": ".venv/bin/mtl-train --cfg job",
                "runs": startup,
                "min_s": min(x["wall_s"] for x in startup),
                "median_s": median([x["wall_s"] for x in startup]),
                "import_torch_min_s": min(x["wall_s"] for x in torch_import),
                "import_torch_runs": torch_import,
                "import_training_stack_runs": stack_import,
                "import_training_stack_min_s": min(x["wall_s"] for x in stack_import),
                "plain_pytorch_floor": {
                    "command": f"python -c '{PLAIN_FLOOR}'",
                    "runs": floor,
                    "min_s": min(x["wall_s"] for x in floor),
                },
                "phases_in_one_process": phases,
                "pycache_env": {"PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")},
                "with_bytecode_cache_runs": cached,
                "with_bytecode_cache_min_s": min(x["wall_s"] for x in cached),
            },
            "runs": runs,
            "wall_s": {"min": min(walls), "median": median(walls)},
            "time_per_step_s": {
                "min": min(r["time_per_step_s"] for r in runs),
                "median": median([r["time_per_step_s"] for r in runs]),
            },
            "prior_predictor_test": prior,
            "script_wall_s": time.perf_counter() - t_all,
        },
    )
    print(f"\nwrote {out} ({time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
