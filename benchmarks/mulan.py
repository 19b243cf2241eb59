"""Mulan multi-target regression benchmark: aRRMSE per set, single-target (the
project's ``baseline=stl``: one MLP per target) against multi-task (one shared MLP, a head per
target), with the protocol of Spyromitros-Xioufis, Tsoumakas, Groves & Vlahavas (2016),
"Multi-target regression via input space expansion: treating targets as inputs", Machine
Learning 104:55-98: k-fold cross-validation (10 folds) and the average relative root mean
squared error over the targets.

Data: the folder of the Mulan ``<set>.arff`` files (``--data``, default
``../shared/data/mulan_mtr``); nothing is downloaded, and the script exits with a message (code 0)
when the folder is absent. Sets missing from the folder are skipped with a message.

Per set and fold f, through the Python API (what ``mtl-train experiment=mulan data.set=S
data.folds=10 data.fold=f`` runs): ``baseline=stl`` first, then one multi-task run per method
(``--methods``, default ``ew``) with ``baseline_dir`` pointing at it (its Δm). Runs that already
finished are kept (the script resumes). Each fold's own val split (10 % of its train rows)
selects the epoch.

RRMSE of target t on a fold, from the run's own test RMSE (summary.json) and the fold's rows
(data.json: the test row numbers) read back from the ARFF file:
RRMSE_t = sqrt(sum_test (y - yhat)^2 / sum_test (y - mean_train(y))^2), mean_train over the fold's
training rows (all rows but the test fold, val included, as the paper's training set); aRRMSE is
its mean over the targets, then averaged over the folds run.

    .venv/bin/python benchmarks/mulan.py                                   # 12 sets x 10 folds
    .venv/bin/python benchmarks/mulan.py --sets enb jura --fold-ids 1 2 3  # a subset
    .venv/bin/python benchmarks/mulan.py --report-only                     # tables of what is there
    .venv/bin/python benchmarks/mulan.py --smoke --out /tmp/mulan_smoke    # tiny end-to-end check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_data import (  # noqa: E402
    data_record,
    delta_m,
    finished,
    markdown_table,
    mean_std,
    mtl_report,
    task_test_metrics,
    train_once,
    update_docs,
)

ROOT = Path(__file__).resolve().parent.parent
#: small sets first (rows x targets), as the runtime allows
SETS = ("andro", "slump", "edm", "enb", "jura", "sf1", "sf2", "atp1d", "atp7d", "osales", "scpf", "wq")


def read_targets(arff: Path):
    """{column: numpy array of its values in file order} of a Mulan ARFF file."""
    import numpy as np
    from scipy.io import arff as sarff

    rows, meta = sarff.loadarff(str(arff))
    out = {}
    for name in meta.names():
        if meta[name][0] == "numeric":
            out[name] = np.asarray(rows[name], dtype=float)
    return out


def arrmse(run_dir: Path, columns: dict) -> dict:
    """Per-target RRMSE and their mean on the run's test fold (see the module docstring)."""
    import numpy as np

    rec = data_record(run_dir)
    test_rows = np.asarray(rec["split"]["test"]["row_numbers"], dtype=int) - 1
    n = len(next(iter(columns.values())))
    train_mask = np.ones(n, dtype=bool)
    train_mask[test_rows] = False
    per = {}
    for task, m in task_test_metrics(run_dir).items():
        y = columns[rec["targets"][task]]
        denom = float(((y[test_rows] - y[train_mask].mean()) ** 2).sum())
        sse = len(test_rows) * m["rmse"] ** 2
        per[task] = math.sqrt(sse / denom) if denom > 0 else math.nan
    vals = [v for v in per.values() if math.isfinite(v)]
    return {"arrmse": sum(vals) / len(vals) if vals else math.nan, "rrmse": per, "test_rows": len(test_rows)}


def collect(out: Path, data: Path, sets, folds, methods) -> dict:
    res: dict[str, dict[str, list[dict]]] = {}
    for s in sets:
        arff = data / f"{s}.arff"
        if not arff.is_file():
            continue
        cols = None
        for f in folds:
            for m in ["stl", *methods]:
                d = out / s / f"fold{f}" / m
                if not finished(d, stl=m == "stl"):
                    continue
                cols = cols if cols is not None else read_targets(arff)
                r = arrmse(d, cols)
                r["fold"] = f
                if m != "stl":
                    r["delta_m"] = delta_m(d)
                res.setdefault(s, {}).setdefault(m, []).append(r)
    return res


def render(res: dict, methods) -> str:
    headers = ["set", "folds", "STL aRRMSE", *[f"{m} aRRMSE" for m in methods], *[f"{m} Δm % vs STL" for m in methods]]
    body = []
    wins = {m: 0 for m in methods}
    both = {m: 0 for m in methods}
    for s, by in res.items():
        stl = by.get("stl", [])
        common = {r["fold"] for r in stl} or {r["fold"] for m in methods for r in by.get(m, [])}  # --no-stl
        for m in methods:
            common &= {r["fold"] for r in by.get(m, [])}
        row = [s, len(common)]
        a_stl, sd_stl, n_stl = mean_std([r["arrmse"] for r in stl if r["fold"] in common])
        row.append(f"{a_stl:.3f} ± {sd_stl:.3f}" if n_stl > 1 else (f"{a_stl:.3f}" if n_stl else "—"))
        dms = []
        for m in methods:
            a, sd, n = mean_std([r["arrmse"] for r in by.get(m, []) if r["fold"] in common])
            row.append(f"{a:.3f} ± {sd:.3f}" if n > 1 else (f"{a:.3f}" if n else "—"))
            if n and n_stl:
                both[m] += 1
                wins[m] += a < a_stl
            dm, _, k = mean_std([r.get("delta_m") for r in by.get(m, []) if r["fold"] in common])
            dms.append(f"{dm:+.2f}" if k else "—")
        body.append(row + dms)
    text = markdown_table(headers, body)
    for m in methods:
        text += f"\n\n{m} below (better than) STL's aRRMSE on {wins[m]} of {both[m]} sets."
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mulan_mtr")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mulan")
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--folds", type=int, default=10, help="K of the K-fold cross-validation")
    ap.add_argument("--fold-ids", type=int, nargs="+", default=None, help="which folds to run (default: all K)")
    ap.add_argument("--methods", nargs="+", default=["ew"])
    ap.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: experiment=mulan's)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    ap.add_argument("--docs", action="store_true", help="write the tables into docs/benchmarks.md (its marked block)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables of the finished runs")
    ap.add_argument("--smoke", action="store_true", help="enb, fold 1, ew, 2 epochs (an end-to-end check)")
    ap.add_argument(
        "--no-stl", action="store_true", help="train only the multi-task methods (no single-target runs, no Δm)"
    )
    a = ap.parse_args()
    if a.smoke:
        a.sets, a.fold_ids, a.methods, a.epochs = ["enb"], [1], ["ew"], a.epochs or 2
    folds = a.fold_ids or list(range(1, a.folds + 1))
    data = a.data.resolve()
    if not data.is_dir() or not any(data.glob("*.arff")):
        print(f"Mulan data not found in {data} (<set>.arff): skipped. Give --data.")
        return
    missing = [s for s in a.sets if not (data / f"{s}.arff").is_file()]
    if missing:
        print(f"not in {data}, skipped: {', '.join(missing)}")
    sets = [s for s in a.sets if s not in missing]
    out = a.out.resolve()
    t0 = time.perf_counter()
    if not a.report_only:
        from _common import quiet_logging

        quiet_logging()
        for s in sets:
            for f in folds:
                base = [
                    "experiment=mulan",
                    f"data.path={data}",
                    f"data.set={s}",
                    f"data.folds={a.folds}",
                    f"data.fold={f}",
                ]
                base += a.extra + ([f"trainer.max_epochs={a.epochs}"] if a.epochs else [])
                stl = out / s / f"fold{f}" / "stl"
                if not a.no_stl:
                    train_once([*base, "baseline=stl"], stl, stl=True)
                for m in a.methods:
                    ref = [] if a.no_stl else [f"baseline_dir={stl}"]
                    train_once([*base, f"weighting={m}", *ref], out / s / f"fold{f}" / m)
    res = collect(out, data, sets, folds, a.methods)
    text = render(res, a.methods)
    reports = {}
    for s in res:
        r = mtl_report([out / s], out / s / "report", "weighting.name,baseline")
        reports[s] = str(r) if r else None
    summary = {
        "benchmark": "mulan",
        "data": str(data),
        "protocol": f"{a.folds}-fold cross-validation (seeded, data.split_seed=0); folds run: {folds}",
        "methods": a.methods,
        "extra_overrides": a.extra,
        "epochs": a.epochs,
        "definition": "RRMSE_t = sqrt(SSE_test / sum_test (y - mean_train y)^2); aRRMSE: mean over targets, then folds",
        "results": res,
        "table": text,
        "mtl_report": reports,
        "wall_s": time.perf_counter() - t0,
    }
    if not a.smoke:
        from _common import machine

        summary["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    (out / "mulan.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "mulan.txt").write_text(text + "\n")
    print(text)
    if a.docs:
        head = (
            f"{a.folds}-fold cross-validation; `folds`: how many of the folds {folds[0]}..{folds[-1]} have finished "
            "STL and multi-task runs; "
            f"epochs: {a.epochs or 'experiment=mulan default'}; aRRMSE mean ± std over those folds "
            "(both); Δm from each multi-task run's summary.json, averaged over the folds."
        )
        update_docs("mulan.py", head + "\n\n" + text)


if __name__ == "__main__":
    main()
