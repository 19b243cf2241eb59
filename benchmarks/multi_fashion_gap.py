"""Why multi-task trails single-task on the short MultiFashion run (docs/workflow.md): training
length or capacity? One seed per cell, the settings of ``benchmarks/multi_fashion.py`` (LeNet-sized
``small_cnn``, 9,000 training pairs, batch 64, AdamW with cosine decay, the full test set) and:

- ``stl``: the two single-task models (``baseline=stl``), channels [16, 32, 64] each;
- ``ew``: one shared model with the same channels (half the parameters of the pair);
- ``ew, wide``: one shared model with channels [24, 48, 96] (about as many parameters as the pair);

each for ``--epochs`` (default 3 and 15). Δm of each ew cell is against the stl cell of the same
epochs (mtl_cli's Δm over both tasks' accuracy and F1, from the runs' summary.json).

    .venv/bin/python benchmarks/multi_fashion_gap.py --root /tmp/fm   # about 10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data import markdown_table, task_test_metrics, train_once  # noqa: E402
from multi_fashion import prepare_root  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "stl": ["baseline=stl", "backbone.channels=[16,32,64]"],
    "ew": ["weighting=ew", "backbone.channels=[16,32,64]"],
    "ew, wide": ["weighting=ew", "backbone.channels=[24,48,96]"],
}


def parameters(run_dir: Path) -> int:
    """Trainable parameters of a run (of both single-task models for a baseline=stl directory)."""
    runs = [run_dir] if (run_dir / "summary.json").is_file() and not (run_dir / "baselines.json").is_file() else []
    runs = runs or sorted(p for p in run_dir.iterdir() if (p / "summary.json").is_file())
    return sum(sum(json.loads((r / "summary.json").read_text())["parameters"].values()) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data"), help="torchvision root (FashionMNIST/raw inside)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multi_fashion_gap")
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 15])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    prepare_root(a.root)
    from _common import quiet_logging

    from mtl_cli.results.delta_m import delta_m

    quiet_logging()
    out = a.out.resolve()
    common = [
        "experiment=multi_fashion",
        f"data.root={a.root.resolve()}",
        "data.train_size=10000",
        "trainer.batch_size=64",
        f"seed={a.seed}",
    ]
    t0 = time.perf_counter()
    rows, cells = [], {}
    for epochs in a.epochs:
        for name, ov in MODELS.items():
            d = out / f"e{epochs}" / name.replace(", ", "_")
            wall = train_once([*common, *ov, f"trainer.max_epochs={epochs}"], d, stl=name == "stl")
            cells[(epochs, name)] = {"test": task_test_metrics(d), "parameters": parameters(d), "wall_s": wall}
    directions = {t: {"accuracy": "higher", "f1": "higher"} for t in ("left", "right")}
    for (epochs, name), c in cells.items():
        base = cells[(epochs, "stl")]["test"]
        dm = None if name == "stl" else delta_m(c["test"], base, directions)["delta_m"]
        c["delta_m"] = dm
        rows.append(
            [
                str(epochs),
                name,
                f"{c['parameters']:,}",
                f"{c['test']['left']['accuracy']:.4f}",
                f"{c['test']['right']['accuracy']:.4f}",
                "—" if dm is None else f"{dm:+.2f}",
            ]
        )
    table = markdown_table(["epochs", "model", "parameters", "left accuracy", "right accuracy", "Δm % vs stl"], rows)
    summary = {
        "seed": a.seed,
        "cells": {f"{e}|{n}": c for (e, n), c in cells.items()},
        "table": table,
        "wall_s": time.perf_counter() - t0,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "multi_fashion_gap.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
