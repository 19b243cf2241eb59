"""mtl-report's plots (PNG, matplotlib's Agg backend; the optional ``plots`` extra):

- ``curves_<rank>_<group>.png``: per task, the training loss against the step and the validation
  primary metric against the epoch, mean over the group's seeds (a band of ± one std);
- ``weights_<rank>_<group>.png``: the task weights against the step (multi-task groups that log them);
- ``pareto.png``: when the runs have exactly two primary tasks, each run's two primary test
  metrics, with the Pareto front's points highlighted and joined.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .curves import mean_curve, read_records, series
from .leaderboard import Row
from .pareto import pareto_front, primary_pair
from .runs import Run

INSTALL = 'pip install "mtl-cli[plots]"'


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")
    return s[:limit].rstrip("_") or "all"


def _band(ax, xs, means, stds, label=None, **kw):
    (line,) = ax.plot(xs, means, label=label, **kw)
    if any(s is not None for s in stds):
        lo = [m - (s or 0.0) for m, s in zip(means, stds)]
        hi = [m + (s or 0.0) for m, s in zip(means, stds)]
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def _records(run: Run) -> list[dict]:
    return [rec for f in run.metrics_files for rec in read_records(f)]


def plot_curves(row: Row, path: Path, title: str) -> bool:
    """Training loss per step and validation primary metric per epoch, one column per task."""
    runs = row.group.runs
    recs = [_records(r) for r in runs]
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks))
    cols = []
    for t in tasks:
        pm = next((r.tasks[t].get("primary_metric") for r in runs if r.tasks.get(t, {}).get("primary_metric")), None)
        loss = mean_curve([series(rs, "train", f"loss/{t}", "step") for rs in recs])
        val = mean_curve([series(rs, "val", f"{t}/{pm}", "epoch") for rs in recs]) if pm else ([], [], [])
        if loss[0] or val[0]:
            cols.append((t, pm, loss, val))
    if not cols:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, len(cols), figsize=(3.2 * len(cols) + 0.6, 5.6), squeeze=False)
    for j, (t, pm, loss, val) in enumerate(cols):
        ax = axes[0][j]
        if loss[0]:
            _band(ax, *loss, marker="." if len(loss[0]) < 30 else None)
        ax.set_title(t)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel("train loss" if j == 0 else "")
        ax = axes[1][j]
        if val[0]:
            xs, means, stds = val
            ax.errorbar(xs, means, yerr=[s or 0.0 for s in stds], marker="o", color="tab:green", capsize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {pm}")
    fig.suptitle(f"{title} (mean over {len(runs)} run{'s' if len(runs) != 1 else ''})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_weights(row: Row, path: Path, title: str) -> bool:
    """Every task's weight/<task> against the step, mean over the group's runs."""
    runs = row.group.runs
    if row.group.kind == "stl":
        return False
    recs = [_records(r) for r in runs]
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks))
    curves = [(t, mean_curve([series(rs, "train", f"weight/{t}", "step") for rs in recs])) for t in tasks]
    curves = [(t, c) for t, c in curves if c[0]]
    if not curves:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for t, c in curves:
        _band(ax, *c, label=t)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("task weight")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: task weights", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_pareto(rows: Sequence[Row], path: Path) -> bool:
    """Each run's two primary test metrics (when every run has the same two primary tasks),
    coloured by group; the Pareto front's points are ringed and joined."""
    runs = [r for row in rows for r in row.group.runs]
    pair = primary_pair(runs)
    if pair is None:
        return False
    (ta, ma, da), (tb, mb, db) = pair
    pts = [(r.test.get(ta, {}).get(ma), r.test.get(tb, {}).get(mb)) for r in runs]
    front = pareto_front(pts, [da, db])
    if not front:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    i = 0
    for k, row in enumerate(rows, 1):
        n = len(row.group.runs)
        mine = [p for p in pts[i : i + n] if None not in p]
        if mine:
            ax.scatter(
                [p[0] for p in mine],
                [p[1] for p in mine],
                label=f"{k}: {row.group.label}"[:50],
                marker="s" if row.group.kind == "stl" else "o",
                s=30,
                zorder=3,
            )
        i += n
    fx = sorted((pts[j] for j in front), key=lambda p: p[0])
    ax.plot([p[0] for p in fx], [p[1] for p in fx], color="black", linewidth=1, zorder=2, label="Pareto front")
    ax.scatter([p[0] for p in fx], [p[1] for p in fx], s=110, facecolors="none", edgecolors="black", zorder=4)
    arrow = {"higher": "↑ better", "lower": "↓ better"}
    ax.set_xlabel(f"{ta}/{ma} (test, {arrow[da]})")
    ax.set_ylabel(f"{tb}/{mb} (test, {arrow[db]})")
    ax.set_title("Pareto front of the runs", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_plots(rows: Sequence[Row], out: Path) -> list[Path]:
    """All plots into ``out`` (created; the plots of an earlier report there are replaced); the
    paths written, in order."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("curves_*.png"), *out.glob("weights_*.png"), out / "pareto.png"]:
        old.unlink(missing_ok=True)  # an earlier report's plots of groups that may be gone
    written = []
    for k, row in enumerate(rows, 1):
        name = f"{k:02d}_{slug(row.group.label)}"
        for kind, fn in (("curves", plot_curves), ("weights", plot_weights)):
            p = out / f"{kind}_{name}.png"
            if fn(row, p, f"{k}: {row.group.label}"):
                written.append(p)
    p = out / "pareto.png"
    if plot_pareto(rows, p):
        written.append(p)
    return written
