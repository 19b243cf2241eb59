"""The Mulan benchmark's tree reference: the single-target learner of Spyromitros-Xioufis et al.
(2016), re-run on our folds, beside the project's single-target and multi-task MLPs.

The paper's base learner, per the authors' replication code (mulan's
``mulan/experiments/MTRExperimentMLJ.java``, "This class replicates the results of the paper ...
Mach Learn (2016) 104: 55"): bagging of 100 Weka REPTrees, one model per target for ST. Here:
scikit-learn's ``BaggingRegressor`` of 100 ``DecisionTreeRegressor`` (CART grown until leaves are
pure, no pruning: REPTree prunes on held-out data, so this is the same family, not the same
learner), one per target, seed 0.

Folds: ``MulanSource(set=S, folds=10, fold=f)`` (what ``experiment=mulan data.folds=10 data.fold=f``
loads; seeded, ``data.split_seed=0``), the trees trained on the fold's training rows with its val
rows (the paper's training set: every row outside the test fold), on the features mtl-train reads
(nominal attributes one-hot, missing values imputed with the training mean, z-scored). RRMSE and
aRRMSE as in benchmarks/mulan.py (training-mean reference over the same rows); targets are z-scored
with the training statistics on both sides of the ratio, which leaves RRMSE unchanged.

The MLP columns are read from ``benchmarks/results/mulan/mulan.json`` (written by mulan.py from its
runs); the script checks that each fold it rebuilds has the test-row count recorded there.

    .venv/bin/python benchmarks/mulan_trees.py --docs         # 12 sets x 10 folds (~5 min here)
    .venv/bin/python benchmarks/mulan_trees.py --sets enb --folds-run 1 --out /tmp/trees   # a check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data import markdown_table, mean_std, update_docs  # noqa: E402
from mulan import SETS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mulan"


def fold_arrays(data: Path, s: str, folds: int, fold: int):
    """(x_train, y_train, x_test, y_test, targets) of one fold: train = the fold's train + val rows."""
    import torch

    from mtl_cli.data.sources.mulan import MulanSource

    splits = MulanSource(path=str(data), set=s, folds=folds, fold=fold).load()
    names = list(splits["test"].targets)

    def arrays(parts):
        x = torch.cat([p.inputs["features"] for p in parts]).double().numpy()
        y = torch.stack([torch.cat([p.targets[t] for p in parts]) for t in names], 1).double().numpy()
        m = torch.stack([torch.cat([p.masks[t] for p in parts]) for t in names], 1).numpy()
        return x, y, m

    return (*arrays([splits["train"], splits["val"]]), *arrays([splits["test"]]), names)


def rrmse(y_test, pred, y_train_mean) -> float:
    denom = float(((y_test - y_train_mean) ** 2).sum())
    return math.sqrt(float(((y_test - pred) ** 2).sum()) / denom) if denom > 0 else math.nan


def tree_fold(data: Path, s: str, folds: int, fold: int, n_estimators: int, jobs: int) -> dict:
    from sklearn.ensemble import BaggingRegressor
    from sklearn.tree import DecisionTreeRegressor

    xtr, ytr, mtr, xte, yte, mte, names = fold_arrays(data, s, folds, fold)
    per = {}
    for j, t in enumerate(names):
        keep, test = mtr[:, j], mte[:, j]
        model = BaggingRegressor(DecisionTreeRegressor(), n_estimators=n_estimators, random_state=0, n_jobs=jobs)
        model.fit(xtr[keep], ytr[keep, j])
        per[t] = rrmse(yte[test, j], model.predict(xte[test]), ytr[keep, j].mean())
    vals = [v for v in per.values() if math.isfinite(v)]
    return {"fold": fold, "arrmse": sum(vals) / len(vals), "rrmse": per, "test_rows": int(len(yte))}


def fmt(xs: list[float]) -> str:
    m, sd, n = mean_std(xs)
    return "—" if n == 0 else (f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mulan_mtr")
    ap.add_argument("--mlp", type=Path, default=RESULTS / "mulan.json", help="mulan.py's results (the MLP columns)")
    ap.add_argument(
        "--tuned",
        type=Path,
        default=RESULTS.parent / "mulan_tuned" / "mulan.json",
        help="mulan.py's results of a second setting (a column of its own when the file exists)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--folds-run", type=int, nargs="+", default=None, help="which folds (default all)")
    ap.add_argument("--trees", type=int, default=100, help="bagged trees per target (the paper: 100)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md (its marked block)")
    ap.add_argument(
        "--reuse", action="store_true", help="fit no tree: the tree results of <out>/mulan_trees.json (new MLP columns)"
    )
    a = ap.parse_args()
    data = a.data.resolve()
    if not data.is_dir() or not any(data.glob("*.arff")):
        print(f"Mulan data not found in {data} (<set>.arff): skipped. Give --data.")
        return
    mlp = json.loads(a.mlp.read_text())["results"] if a.mlp.is_file() else {}
    tuned = json.loads(a.tuned.read_text()) if a.tuned.is_file() else None
    if tuned:  # its runs under the key "ew (tuned)"
        for s, by in tuned["results"].items():
            mlp.setdefault(s, {})["ew (tuned)"] = by.get("ew", [])
    folds = a.folds_run or list(range(1, a.folds + 1))
    t0 = time.perf_counter()
    res: dict[str, list[dict]] = {}
    stored = a.out / "mulan_trees.json"
    if a.reuse:
        res = {s: rs for s, rs in json.loads(stored.read_text())["results"].items() if s in a.sets}
    for s in [] if a.reuse else a.sets:
        if not (data / f"{s}.arff").is_file():
            print(f"{s}: not in {data}, skipped")
            continue
        recorded = {r["fold"]: r["test_rows"] for r in mlp.get(s, {}).get("stl", [])}
        for f in folds:
            r = tree_fold(data, s, a.folds, f, a.trees, a.jobs)
            if f in recorded and recorded[f] != r["test_rows"]:
                sys.exit(
                    f"{s} fold {f}: {r['test_rows']} test rows, mulan.json recorded {recorded[f]}: not the same fold"
                )
            res.setdefault(s, []).append(r)
        print(f"{s}: aRRMSE {fmt([r['arrmse'] for r in res[s]])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    methods = ["stl", "ew"] + (["ew (tuned)"] if tuned else [])
    rows, wins = [], dict.fromkeys(methods, 0)
    for s, rs in res.items():
        done = {r["fold"] for r in rs}
        by = {m: [r for r in mlp.get(s, {}).get(m, []) if r["fold"] in done] for m in methods}
        trees = [r["arrmse"] for r in rs]
        cols = [fmt(trees), *(fmt([r["arrmse"] for r in by[m]]) for m in methods)]
        for m in wins:
            vals = [r["arrmse"] for r in by[m]]
            if vals and len(vals) == len(trees):
                wins[m] += mean_std(vals)[0] < mean_std(trees)[0]
        rows.append([s, len(rs), *cols])
    headers = ["set", "folds", "ST bagged trees aRRMSE", "STL MLP aRRMSE", "ew MLP aRRMSE"]
    headers += ["ew MLP, tuned aRRMSE"] if tuned else []
    table = markdown_table(headers, rows)
    table += (
        f"\n\nBelow (better than) the bagged trees: the single-target MLPs on {wins['stl']} of {len(rows)} sets, "
        f"the multi-task MLP (ew) on {wins['ew']} of {len(rows)}"
        + (f", the tuned multi-task MLP on {wins['ew (tuned)']} of {len(rows)}." if tuned else ".")
    )

    def where(p: Path) -> str:
        return str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p)

    head = (
        f"{a.folds}-fold cross-validation, folds {folds[0]}..{folds[-1]}; aRRMSE mean ± std over the folds; "
        f"bagged trees: {a.trees} scikit-learn regression trees per target, computed by this script; MLP columns "
        f"from {where(a.mlp)}"
        + (f"; tuned: {where(a.tuned)}, `experiment=mulan {' '.join(tuned['extra_overrides'])}`." if tuned else ".")
    )
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wall = json.loads(stored.read_text())["wall_s"] if a.reuse else time.perf_counter() - t0  # of the fits
    summary = {"results": res, "table": table, "head": head, "wall_s": wall}
    (out / "mulan_trees.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(head + "\n\n" + table)
    if a.docs:
        update_docs("mulan_trees.py", head + "\n\n" + table)


if __name__ == "__main__":
    main()
