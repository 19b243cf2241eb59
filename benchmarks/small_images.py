"""Small real images, as a new user brings them: the 1,797 8x8 digit scans that scikit-learn ships
(Alpaydin & Kaynak, UCI "Optical Recognition of Handwritten Digits"; no download), upscaled to
32x32 grayscale PNGs and listed in a manifest with four tasks of three kinds:

- ``digit``: which digit (classification, 10 classes);
- ``odd``: whether it is odd (binary);
- ``big``: whether it is 5 or more (binary);
- ``ink``: the share of the 8x8 scan's ink, its mean intensity over 16 (regression).

The manifest's ``split`` column fixes one seeded 80/10/10 split, so that every row below is
measured on the same test images. Rows:

- ``defaults``: ``mtl-train data=image_manifest`` with only what the data needs (path, channels,
  image size, the kinds): the built-in defaults, tuned for the generated shapes;
- ``experiment=small_images``: the preset for small real image sets (conf/experiment/small_images.yaml);
- ``linear single-task``: mtl-train's own linear reference, ``baseline=stl backbone=mlp
  'backbone.hidden=[]'`` (one logistic / linear model per task on the flattened pixels, AdamW on the
  preset's schedule);
- ``logistic regression``: one scikit-learn ``LogisticRegression`` per classification task (and a
  ridge regression for ``ink``) on the 1,024 pixels in [0, 1] (the linear reference, outside
  mtl-train), its regularisation chosen on the val rows.

Each mtl-train row is the mean ± std over ``--seeds`` (default 3). Run:

    .venv/bin/python benchmarks/small_images.py                 # about 10 min on 2 CPU cores
    .venv/bin/python benchmarks/small_images.py --docs          # and write the table into docs/benchmarks.md
    .venv/bin/python benchmarks/small_images.py --smoke --out /tmp/si   # 1 epoch, 1 seed: an end-to-end check
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data import markdown_table, pm, task_test_metrics, train_once, update_docs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = "data.kinds={digit: classification, odd: binary, big: binary, ink: regression}"
TASKS = ["tasks=none", "+tasks.digit.kind=classification", "+tasks.odd.kind=binary", "+tasks.big.kind=binary"]
DATA = ["data=image_manifest", "data.channels=1", "data.image_size=32", KINDS, *TASKS, "+tasks.ink.kind=regression"]
ROWS = {"defaults": [], "experiment=small_images": ["experiment=small_images"]}
#: the linear single-task reference inside mtl-train: one logistic / linear model per task on the
#: flattened pixels (an MLP backbone without hidden layers), trained on the preset's schedule
LINEAR = ["baseline=stl", "backbone=mlp", "backbone.hidden=[]", "experiment=small_images"]
ROWS["linear single-task (baseline=stl, backbone.hidden=[])"] = LINEAR
METRICS = [("digit", "accuracy"), ("odd", "accuracy"), ("big", "accuracy"), ("ink", "r2")]


def make_data(folder: Path) -> Path:
    """The PNGs and manifest.csv in ``folder`` (written once); returns the manifest's path."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    digits = load_digits()
    n = len(digits.target)
    order = np.random.default_rng(0).permutation(n)
    split = np.empty(n, dtype=object)
    split[order[: int(0.8 * n)]] = "train"
    split[order[int(0.8 * n) : int(0.9 * n)]] = "val"
    split[order[int(0.9 * n) :]] = "test"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, y) in enumerate(zip(digits.images, digits.target)):
        name = f"images/{i:04d}.png"
        pixels = (img / 16.0 * 255).round().astype("uint8")
        Image.fromarray(pixels, mode="L").resize((32, 32), Image.BILINEAR).save(folder / name)
        rows.append([name, int(y), int(y % 2), int(y >= 5), round(float(img.mean() / 16.0), 6), split[i]])
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "digit", "odd", "big", "ink", "split"])
        w.writerows(rows)
    return manifest


def linear_reference(manifest: Path) -> dict[str, float]:
    """Test metrics of the linear models on the pixels (see the module docstring)."""
    import numpy as np
    from PIL import Image
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score

    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    x = np.stack([np.asarray(Image.open(manifest.parent / r["image"]), dtype=float).ravel() / 255 for r in rows])
    part = {s: np.array([r["split"] == s for r in rows]) for s in ("train", "val", "test")}
    out = {}
    for task, metric in METRICS:
        y = np.array([float(r[task]) for r in rows])
        best = None
        for c in (0.01, 0.1, 1.0, 10.0, 100.0):
            if metric == "accuracy":
                model = LogisticRegression(C=c, max_iter=2000).fit(x[part["train"]], y[part["train"]].astype(int))
                val = (model.predict(x[part["val"]]) == y[part["val"]]).mean()
            else:
                model = Ridge(alpha=1.0 / c).fit(x[part["train"]], y[part["train"]])
                val = r2_score(y[part["val"]], model.predict(x[part["val"]]))
            if best is None or val > best[0]:
                best = (val, model)
        model = best[1]
        pred = model.predict(x[part["test"]])
        yt = y[part["test"]]
        out[f"{task}/{metric}"] = float((pred == yt).mean()) if metric == "accuracy" else float(r2_score(yt, pred))
    return out


def test_metrics(run_dir: Path) -> dict[str, float]:
    test = task_test_metrics(run_dir)  # a baseline=stl directory: each task from its own run
    return {f"{t}/{m}": float(test[t][m]) for t, m in METRICS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "small_images")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md (its marked block)")
    ap.add_argument("--smoke", action="store_true", help="1 epoch, seed 0 (an end-to-end check)")
    a = ap.parse_args()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("scikit-learn is not installed (it holds the digit scans): skipped. pip install scikit-learn")
        return
    out = a.out.resolve()
    manifest = make_data(out / "data")
    seeds = [0] if a.smoke else a.seeds
    extra = ["trainer.max_epochs=1"] if a.smoke else []
    from _common import quiet_logging

    quiet_logging()
    t0 = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {}
    walls: dict[str, list[float]] = {}
    for row, overrides in ROWS.items():
        for seed in seeds:
            run_dir = out / ("linear" if overrides is LINEAR else row.replace("=", "_")) / f"seed{seed}"
            ov = [*DATA, f"data.path={manifest}", *overrides, f"seed={seed}", *extra]
            walls.setdefault(row, []).append(train_once(ov, run_dir, stl=overrides is LINEAR))
            results.setdefault(row, []).append(test_metrics(run_dir))
    linear = linear_reference(manifest)
    headers = ["row", "seeds", *[f"{t} {m}" for t, m in METRICS]]
    body = [
        [
            "logistic / ridge regression on the pixels (scikit-learn)",
            "—",
            *[f"{linear[f'{t}/{m}']:.3f}" for t, m in METRICS],
        ]
    ]
    for row, rs in results.items():
        body.append([f"`{row}`", str(len(rs)), *[pm([r[f"{t}/{m}"] for r in rs], 3) for t, m in METRICS]])
    table = markdown_table(headers, body)
    summary = {
        "benchmark": "small_images",
        "overrides": {row: [*DATA, "data.path=<manifest>", *ov] for row, ov in ROWS.items()},
        "seeds": seeds,
        "linear": linear,
        "runs": results,
        "wall_s": walls,
        "table": table,
        "total_s": time.perf_counter() - t0,
    }
    if not a.smoke:
        from _common import machine

        summary["machine"] = machine()
    (out / "small_images.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    if a.docs and not a.smoke:
        head = (
            f"Test metrics on the digit scans' fixed test split (180 images); mean ± std over seeds "
            f"{', '.join(map(str, seeds))}; accuracy for digit, odd and big, R² for ink."
        )
        update_docs("small_images.py", head + "\n\n" + table)


if __name__ == "__main__":
    main()
