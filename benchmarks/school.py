"""School benchmark: 139 regression tasks (one per school, ILEA exam scores) on the
published 75/25 splits of Argyriou, Evgeniou & Pontil, explained variance mean ± std over splits.

Data: the folder of ``school_b.mat`` and ``school_<k>_indexes.mat`` (``--data``, default
``../shared/data/school``); nothing is downloaded, and the script exits with a message (code 0)
when the folder is absent.

Runs, per split k, through the Python API (what ``mtl-train experiment=school data.split=k``
runs): one hard-sharing MLP per method (``--methods``, default ``ew uw mgda_ub``: equal
weighting, a loss-based and a representation-gradient method) and, with ``--stl``, the
project's single-task baselines (``baseline=stl``: one model per school) that every multi-task
run then reports Δm against (``baseline_dir``). Runs that already finished are kept, so the
script resumes and several copies can share ``--out`` (e.g. one per method).

Explained variance (EV), computed from each run's own test metrics (summary.json: the RMSE of
every school at the selected epoch) and the split's test scores read from the .mat files:

- ``EV``: 1 - sum over schools of SSE / sum over all test pupils of (y - mean test y)^2, i.e.
  1 - MSE / Var(y_test) over all test samples: the "total variance minus sum-squared error on
  the test set, as a percentage of the total variance" of Bakker & Heskes (2003), used by
  Argyriou et al. (2008) and Kumar & Daumé (2012);
- ``EV_w``: the schools' own R^2 on their test pupils, averaged weighted by test pupils.

    .venv/bin/python benchmarks/school.py                                  # 10 splits, default methods
    .venv/bin/python benchmarks/school.py --splits 1 2 3 --methods ew      # a subset
    .venv/bin/python benchmarks/school.py --report-only                    # tables of what is there
    .venv/bin/python benchmarks/school.py --smoke --out /tmp/school_smoke  # tiny end-to-end check
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
    delta_m,
    finished,
    markdown_table,
    mean_std,
    mtl_report,
    pm,
    task_test_metrics,
    train_once,
    update_docs,
)

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("ew", "uw", "mgda_ub")
#: per-method overrides beyond weighting=<name> (mgda_ub: vectorised per-task products, 139 tasks)
METHOD_EXTRA = {"mgda_ub": ["weighting.mode=batched"]}
#: the single-task baselines' schedule: a school has about 70 training pupils, so the multi-task
#: run's batch of 128 would give one optimizer step per epoch (20 steps in all); batches of 16 for
#: 30 epochs give about 150, and the selected epoch (the best val MAE) is mostly well inside them
STL_EXTRA = ["trainer.batch_size=16", "trainer.max_epochs=30"]
NAMES = {"stl": "stl (baseline=stl, batch 16, 30 epochs)", "ridge": "ridge per school (numpy reference, not mtl-train)"}


def split_test_scores(data: Path, split: int):
    """(y of the split's test pupils, their school numbers 1..139) from the .mat files."""
    import numpy as np
    from scipy.io import loadmat

    b = loadmat(str(data / "school_b.mat"))
    y = np.asarray(b["y"], dtype=float).ravel()
    starts = np.asarray(b["task_indexes"]).ravel().astype(int) - 1
    school = np.zeros(len(y), dtype=int)
    for t, s in enumerate(starts):
        school[s:] = t + 1
    tst = np.asarray(loadmat(str(data / f"school_{split}_indexes.mat"))["tst"]).ravel().astype(int) - 1
    return y[tst], school[tst]


def ridge_per_school(data: Path, split: int, lambdas=(0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)) -> dict:
    """A linear single-task reference outside mtl-train (numpy): one ridge regression per school on
    its train pupils (features z-scored on the split's train rows, unpenalised intercept), one
    lambda for all schools chosen on a seeded 10 % holdout of the train rows, then refit on all of
    them. Returns EV and EV_w on the split's test pupils, as for the runs."""
    import numpy as np
    from scipy.io import loadmat

    b = loadmat(str(data / "school_b.mat"))
    x = np.asarray(b["x"], dtype=float)
    y = np.asarray(b["y"], dtype=float).ravel()
    if x.shape[0] != len(y):
        x = x.T
    x = x[:, x.std(0) > 0]  # the bias column goes: the intercept is fitted apart
    starts = np.asarray(b["task_indexes"]).ravel().astype(int) - 1
    school = np.zeros(len(y), dtype=int)
    for t, st in enumerate(starts):
        school[st:] = t + 1
    idx = loadmat(str(data / f"school_{split}_indexes.mat"))
    tr, tst = (np.asarray(idx[k]).ravel().astype(int) - 1 for k in ("tr", "tst"))
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd == 0] = 1.0
    z = (x - mu) / sd

    def fit_predict(fit_rows, pred_rows, lam):
        pred = np.full(len(pred_rows), np.nan)
        for k in np.unique(school[pred_rows]):
            f = fit_rows[school[fit_rows] == k]
            p = school[pred_rows] == k
            if len(f) == 0:
                continue
            zc, yc = z[f] - z[f].mean(0), y[f] - y[f].mean()
            w = np.linalg.solve(zc.T @ zc + lam * np.eye(z.shape[1]), zc.T @ yc)
            pred[p] = (z[pred_rows[p]] - z[f].mean(0)) @ w + y[f].mean()
        return pred

    rng = np.random.default_rng(0)
    hold = rng.random(len(tr)) < 0.1
    fit, val = tr[~hold], tr[hold]
    errs = {lam: np.nanmean((fit_predict(fit, val, lam) - y[val]) ** 2) for lam in lambdas}
    lam = min(errs, key=errs.get)
    pred = fit_predict(tr, tst, lam)
    yt, st = y[tst], school[tst]
    ok = np.isfinite(pred)
    sse = float(((pred[ok] - yt[ok]) ** 2).sum())
    r2w, n_all = 0.0, 0
    for k in np.unique(st):
        m = (st == k) & ok
        if m.sum() < 2:
            continue
        tss_k = float(((yt[m] - yt[m].mean()) ** 2).sum())
        if tss_k > 0:
            r2w += m.sum() * (1.0 - float(((pred[m] - yt[m]) ** 2).sum()) / tss_k)
            n_all += int(m.sum())
    return {
        "ev": 1.0 - sse / float(((yt - yt.mean()) ** 2).sum()),
        "ev_w": r2w / n_all,
        "rmse": float(np.sqrt(sse / ok.sum())),
        "lambda": lam,
        "split": split,
    }


def explained_variance(run_dir: Path, y, school) -> dict:
    """EV and EV_w (see the module docstring) of one finished run, from its test metrics."""
    import numpy as np

    test = task_test_metrics(run_dir)
    sse = 0.0
    r2w = 0.0
    n_all = 0
    for task, m in test.items():
        k = int(task.rsplit("_", 1)[1])
        n = int((school == k).sum())
        if n == 0 or not math.isfinite(m.get("rmse", math.nan)):
            continue
        sse += n * m["rmse"] ** 2
        n_all += n
        if math.isfinite(m.get("r2", math.nan)):
            r2w += n * m["r2"]
    tss = float(((y - y.mean()) ** 2).sum())
    return {
        "ev": 1.0 - sse / tss,
        "ev_w": r2w / n_all,
        "rmse": math.sqrt(sse / n_all),
        "test_pupils": n_all,
        "tasks": len(test),
        "mean_r2": float(np.nanmean([m.get("r2", math.nan) for m in test.values()])),
    }


def delta_m_against(run_dir: Path, stl_dir: Path, primary_only: bool = False) -> float | None:
    """Test Δm (%) of a multi-task run trained without ``baseline_dir`` against the split's
    single-task baselines, once they have finished: mtl_cli's own Δm from the two runs' test
    metrics, over every metric summary.json gives a direction (MAE, RMSE, R²) or, with
    ``primary_only``, over each school's primary metric (MAE)."""
    if not finished(stl_dir, stl=True):
        return None
    from mtl_cli.results.delta_m import delta_m as compute

    s = json.loads((run_dir / "summary.json").read_text())
    doc = json.loads((stl_dir / "baselines.json").read_text())["tasks"]
    directions = {
        t: {m: d for m, d in info["directions"].items() if not primary_only or m == info["primary_metric"]}
        for t, info in s["tasks"].items()
    }
    value = compute(s["test"], {t: b["test"] for t, b in doc.items()}, directions)["delta_m"]
    return value if math.isfinite(value) else None


def run_dirs(out: Path, splits, methods, stl: bool):
    for k in splits:
        if stl:
            yield k, "stl", out / f"split{k}" / "stl"
        for m in methods:
            yield k, m, out / f"split{k}" / m


def collect(out: Path, data: Path, splits, methods, stl: bool) -> dict:
    rows: dict[str, list[dict]] = {}
    cache = {}
    for k, m, d in run_dirs(out, splits, methods, stl):
        if not finished(d, stl=m == "stl"):
            continue
        if k not in cache:
            cache[k] = split_test_scores(data, k)
        ev = explained_variance(d, *cache[k])
        ev.update(split=k, run_dir=str(d.relative_to(out)))
        if m != "stl":
            ev["delta_m"] = delta_m(d) if delta_m(d) is not None else delta_m_against(d, out / f"split{k}" / "stl")
            ev["delta_m_mae"] = delta_m_against(d, out / f"split{k}" / "stl", primary_only=True)
            ev["epochs"] = json.loads((d / "summary.json").read_text())["epochs"]
        rows.setdefault(m, []).append(ev)
    return rows


def render(rows: dict, order) -> str:
    headers = [
        "method",
        "splits",
        "EV % (all test pupils)",
        "EV_w % (schools' R², pupil-weighted)",
        "RMSE",
        "Δm % vs STL (MAE)",
        "Δm % vs STL (MAE, RMSE, R²)",
    ]
    body = []
    for m in order:
        r = rows.get(m)
        if not r:
            continue
        dm = [x.get("delta_m") for x in r if x.get("delta_m") is not None]
        dm_mae = [x.get("delta_m_mae") for x in r if x.get("delta_m_mae") is not None]
        body.append(
            [
                NAMES.get(m, m),
                ",".join(str(x["split"]) for x in r),
                pm([x["ev"] for x in r], 2, 100),
                pm([x["ev_w"] for x in r], 2, 100),
                pm([x["rmse"] for x in r], 3),
                pm(dm_mae, 2) if dm_mae else "—",
                pm(dm, 2) if dm else "—",
            ]
        )
    return markdown_table(headers, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "school")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "school")
    ap.add_argument("--splits", type=int, nargs="+", default=list(range(1, 11)))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument(
        "--stl", action="store_true", help="also train baseline=stl per split (139 runs each) and report Δm"
    )
    ap.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: experiment=school's)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    ap.add_argument("--docs", action="store_true", help="write the tables into docs/benchmarks.md (its marked block)")
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables of the finished runs")
    ap.add_argument("--smoke", action="store_true", help="split 1, ew only, 1 epoch (an end-to-end check)")
    a = ap.parse_args()
    if a.smoke:
        a.splits, a.methods, a.epochs, a.stl = [1], ["ew"], a.epochs or 1, False
    data = a.data.resolve()
    if not (data / "school_b.mat").is_file():
        print(f"School data not found in {data} (school_b.mat, school_<k>_indexes.mat): skipped. Give --data.")
        return
    out = a.out.resolve()
    base = ["experiment=school", f"data.path={data}", *a.extra]
    if a.epochs:
        base.append(f"trainer.max_epochs={a.epochs}")
    t0 = time.perf_counter()
    if not a.report_only:
        from _common import quiet_logging

        quiet_logging()
        for k in a.splits:
            stl_dir = out / f"split{k}" / "stl"
            if a.stl:
                train_once([*base, f"data.split={k}", "baseline=stl", *STL_EXTRA], stl_dir, stl=True)
            for m in a.methods:
                ov = [*base, f"data.split={k}", f"weighting={m}", *METHOD_EXTRA.get(m, [])]
                if finished(stl_dir, stl=True):
                    ov.append(f"baseline_dir={stl_dir}")
                train_once(ov, out / f"split{k}" / m)
    rows = collect(out, data, a.splits, a.methods, a.stl or any((out / f"split{k}" / "stl").is_dir() for k in a.splits))
    done = sorted({r["split"] for rs in rows.values() for r in rs})
    rows["ridge"] = [ridge_per_school(data, k) for k in done]
    order = ["ridge", "stl", *a.methods]
    text = render(rows, order)
    have = [{r["split"] for r in rows[m]} for m in order if rows.get(m)]
    common = set.intersection(*have) if have else set()
    if have and any(h != common for h in have) and common:
        same = {m: [r for r in rs if r["split"] in common] for m, rs in rows.items()}
        text += f"\n\nOn the splits every row has ({', '.join(map(str, sorted(common)))}):\n\n" + render(same, order)
    report = mtl_report(sorted(out.glob("split*")), out / "report", "weighting.name")
    summary = {
        "benchmark": "school",
        "data": str(data),
        "splits_requested": a.splits,
        "methods": a.methods,
        "overrides": base,
        "definition": {
            "ev": "1 - sum_schools SSE / sum_test_pupils (y - mean(y_test))^2, one value per split",
            "ev_w": "schools' test R^2 averaged weighted by their test pupils",
        },
        "runs": rows,
        "table": text,
        "mtl_report": str(report.relative_to(ROOT)) if report and report.is_relative_to(ROOT) else str(report),
        "wall_s": time.perf_counter() - t0,
    }
    if not a.smoke:
        from _common import machine

        summary["machine"] = machine()
    out.mkdir(parents=True, exist_ok=True)
    (out / "school.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "school.txt").write_text(text + "\n")
    print(text)
    if a.docs:
        head = (
            f"Splits with finished runs: {', '.join(map(str, done)) or 'none'} (of the 10 published); "
            f"overrides: `{' '.join(o for o in base if not o.startswith('data.path'))}`; mean ± std over splits."
        )
        update_docs("school.py", head + "\n\n" + text)
    m, _, n = mean_std([r["ev"] for r in rows.get(a.methods[0], [])])
    print(f"\n{a.methods[0]}: EV {100 * m:.2f} % over {n} split(s); results in {out}")


if __name__ == "__main__":
    main()
