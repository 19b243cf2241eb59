"""Bytes each weighting method all-reduces per optimizer step with several processes, counted by
the run itself (``mtl_cli.train.distributed.Comm.bytes``, DDP's all-reduce through a comm hook),
for docs/distributed.md's table.

    .venv/bin/python benchmarks/comm_bytes.py            # 2 gloo processes on this machine

The default experiment's tasks (shape, size, present) on the mlp backbone, one epoch: P_shared and
P_task are the model's shared and task-specific parameter counts, T = 3, and the table gives each
collective's bytes per optimizer step (float32: 4 bytes a value; the losses' all-reduce is float64).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "helpers" / "dist_worker.py"
BASE = [
    "backbone=mlp",
    "data.train_size=256",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "tasks.segmentation.enabled=false",
    "trainer.max_epochs=1",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "logger.console_summary=false",
    "device=cpu",
]
METHODS = ["ew", "uw", "famo", "mgda", "pcgrad", "upgrad", "nash_mtl", "graddrop", "mgda_ub", "gradnorm"]


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "spec.json"
        runs = {m: [f"weighting={m}"] for m in METHODS}
        spec.write_text(json.dumps({"base": BASE, "runs": runs, "out": d}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run(cmd + [str(spec)], capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            return 1
        report = json.loads((Path(d) / "report.json").read_text())
        model = torch.load(Path(d) / "ew" / "checkpoints" / "last.pt", weights_only=True)["model"]
        shared = sum(v.numel() for k, v in model.items() if k.startswith("backbone."))
        total = sum(v.numel() for v in model.values())
    tags = ["losses", "parameter gradients", "task gradients", "gramian", "gradient norms", "signals"]
    print(f"2 processes, mlp backbone: P_shared = {shared:,}, P_task = {total - shared:,}, T = 3\n")
    print("| method | " + " | ".join(tags) + " | total bytes/step |")
    print("|---|" + "---|" * (len(tags) + 1))
    for m in METHODS:
        r = report[m]
        steps = max(1, r["steps"])
        per = {t: r["bytes"].get(t, 0) / steps for t in tags}
        cells = [f"{per[t]:,.0f}" if per[t] else "-" for t in tags]
        print(f"| {m} | " + " | ".join(cells) + f" | {sum(per.values()):,.0f} |")
    print("\n(evaluation's reductions, a few bytes per task per evaluation, are not per step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
