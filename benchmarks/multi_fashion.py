"""MultiFashion benchmark: single-task baselines, equal weighting and weighting methods over seeds.

Real data, no download: Fashion-MNIST from a torchvision root, or from Debian's
``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``), whose gzip files
this script unpacks into ``--root`` when the root has none.

For each seed: ``mtl-train baseline=stl`` (one single-task model per task: left, right), then one
multirun over the weighting methods pointing at that seed's baselines (``baseline_dir``), so every
run reports Δm. Finally ``mtl-report`` over everything writes report.csv / report.md (and plots
when matplotlib is installed) into ``--out``.

    .venv/bin/python benchmarks/multi_fashion.py --root /tmp/fm       # the figures in docs/workflow.md
    .venv/bin/python benchmarks/multi_fashion.py --seeds 0 --methods ew famo --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
METHODS = ("ew", "uw", "dwa", "famo", "pcgrad", "cagrad", "upgrad")


def prepare_root(root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).is_file() for f in FILES):
        return
    if not all((DEBIAN / f"{f}.gz").is_file() for f in FILES):
        sys.exit(
            f"no Fashion-MNIST in {raw} and no Debian package files in {DEBIAN}: "
            "apt-get install dataset-fashion-mnist, or point --root at a torchvision root"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        with gzip.open(DEBIAN / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)


def mtl_train(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "mtl_cli.cli.train", *args]
    print("$ mtl-train " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data"), help="torchvision root (FashionMNIST/raw inside)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/multi_fashion"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=10000, help="base Fashion-MNIST train items used (of 60000)")
    ap.add_argument(
        "--extra",
        nargs="*",
        default=["backbone.channels=[16,32,64]", "trainer.batch_size=64"],
        help="more overrides for every run (default: a LeNet-sized CNN)",
    )
    a = ap.parse_args()
    prepare_root(a.root)
    out = a.out.resolve()
    common = [
        "experiment=multi_fashion",
        f"data.root={a.root.resolve()}",
        f"data.train_size={a.train_size}",
        f"trainer.max_epochs={a.epochs}",
        "trainer.progress=false",
        "logger.log_every=10",
        "logger.console_summary=false",
        "device=cpu",
        *a.extra,
    ]
    t0 = time.perf_counter()
    for seed in a.seeds:
        stl = out / "stl" / f"seed{seed}"
        if not (stl / "baselines.json").is_file():
            mtl_train(["baseline=stl", f"seed={seed}", f"run_dir={stl}", *common])
        sweep = out / "mtl" / f"seed{seed}"
        mtl_train(
            [
                "-m",
                f"weighting={','.join(a.methods)}",
                f"seed={seed}",
                f"baseline_dir={stl}",
                f"hydra.sweep.dir={sweep}",
                *common,
            ]
        )
    print(f"all runs: {time.perf_counter() - t0:.0f} s", flush=True)
    subprocess.run(
        [sys.executable, "-m", "mtl_cli.cli.report", str(out / "mtl"), str(out / "stl"), "--out", str(out)], check=True
    )


if __name__ == "__main__":
    main()
