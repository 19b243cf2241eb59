"""Helpers of the benchmarks on real data files (school.py, mulan.py): train through the Python
API (``mtl_cli.compose`` / ``mtl_cli.train``, what mtl-train runs), skip runs that already
finished, read the runs' own ``summary.json`` / ``data.json`` back, call ``mtl-report`` and
format mean ± std tables. No number in a table is typed by hand: each comes from a run directory."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

#: overrides of every run: no progress bar, no end-of-run table, always the CPU
QUIET_RUN = ["trainer.progress=false", "logger.console_summary=false", "device=cpu"]


def finished(run_dir: Path, stl: bool = False) -> bool:
    return (run_dir / ("baselines.json" if stl else "summary.json")).is_file()


def train_once(overrides: Sequence[str], run_dir: Path, stl: bool = False) -> float:
    """One ``mtl-train <overrides> run_dir=<run_dir>`` in this process, unless it already finished
    there (then 0 s). Returns the wall time in seconds."""
    from mtl_cli import compose, train

    if finished(run_dir, stl):
        return 0.0
    args = [*overrides, *QUIET_RUN, f"run_dir={run_dir}", "overwrite=true"]
    print("$ mtl-train " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    train(compose(args))
    wall = time.perf_counter() - t0
    print(f"  ({wall:.0f} s)", flush=True)
    return wall


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def task_test_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    """{task: {metric: test value}} of a finished run; for a ``baseline=stl`` run directory, each
    task's value comes from its own single-task run (``<run_dir>/<task>/summary.json``)."""
    if (run_dir / "summary.json").is_file() and not (run_dir / "baselines.json").is_file():
        return load_json(run_dir / "summary.json")["test"]
    out: dict[str, dict[str, float]] = {}
    for sub in sorted(p for p in run_dir.iterdir() if (p / "summary.json").is_file()):
        out.update(load_json(sub / "summary.json")["test"])
    return out


def data_record(run_dir: Path) -> dict:
    """data.json of a run (of the first single-task run of a ``baseline=stl`` directory)."""
    if (run_dir / "data.json").is_file():
        return load_json(run_dir / "data.json")
    for sub in sorted(run_dir.iterdir()):
        if (sub / "data.json").is_file():
            return load_json(sub / "data.json")
    raise FileNotFoundError(f"no data.json in {run_dir}")


def mean_std(xs: Sequence[float]) -> tuple[float, float, int]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def pm(xs: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    m, s, n = mean_std([x * scale for x in xs if x is not None])
    if n == 0:
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def delta_m(run_dir: Path) -> float | None:
    """The run's own test Δm (summary.json, present when it was trained with baseline_dir)."""
    s = load_json(run_dir / "summary.json")
    d = s.get("delta_m")
    return d.get("test") if isinstance(d, dict) else None


def mtl_report(dirs: Sequence[Path], out: Path, group_by: str) -> Path | None:
    """``mtl-report DIRS --out OUT --group-by KEYS --metrics primary --no-plots``; returns
    report.md, or None when mtl-report failed (its message is printed)."""
    dirs = [d for d in dirs if d.exists()]
    if not dirs:
        return None
    cmd = [sys.executable, "-m", "mtl_cli.cli.report", *map(str, dirs), "--out", str(out)]
    cmd += ["--group-by", group_by, "--metrics", "primary", "--no-plots"]
    print("$ mtl-report " + " ".join(cmd[3:]), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:] + r.stderr[-2000:], flush=True)
        return None
    return out / "report.md"


DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def update_docs(script: str, text: str, docs: Path = DOCS) -> bool:
    """Replace the block between ``<!-- begin: benchmarks/<script> -->`` and
    ``<!-- end: benchmarks/<script> -->`` in docs/benchmarks.md with ``text`` (the tables this run
    computed). Returns False, changing nothing, when the markers are missing."""
    begin, end = f"<!-- begin: benchmarks/{script} -->", f"<!-- end: benchmarks/{script} -->"
    doc = docs.read_text()
    i, j = doc.find(begin), doc.find(end)
    if i < 0 or j < i:
        print(f"{docs}: no {begin} ... {end} block, not updated")
        return False
    # blank lines around the tables: Markdown would take the markers for table rows
    docs.write_text(doc[: i + len(begin)] + "\n\n" + text.strip() + "\n\n" + doc[j:])
    print(f"{docs}: {script} block updated")
    return True
