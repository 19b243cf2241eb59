"""Shared helpers of the benchmark scripts: machine description, Markdown tables, JSON results,
and the config / run helpers that time the real ``mtl-train`` code path (``mtl_cli.train.api.train``)."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> dict[str, Any]:
    """The commit the measured code is at, and whether mtl_cli/ or conf/ differ from it."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "mtl_cli", "conf"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"commit": head, "mtl_cli_or_conf_modified": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "mtl_cli_or_conf_modified": None}


def machine() -> dict[str, Any]:
    return {
        "git": git_state(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, obj: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    obj = dict(obj)
    obj.setdefault("machine", machine())
    obj["machine"]["loadavg_at_end"] = list(os.getloadavg())
    obj["command"] = " ".join([".venv/bin/python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def quiet_logging() -> None:
    """Keep the console free for the tables: mtl_cli logs INFO lines only per epoch (never per
    step), so silencing them changes nothing in the timed training steps."""
    logging.disable(logging.INFO)


def run_train(cfg, run_root: str | None = None) -> dict:
    """One real ``mtl-train`` run (``mtl_cli.train.api.train``: validate, run dir, ``fit``) in this
    process, in a throw-away run directory; returns the summary."""
    from mtl_cli.train.api import train

    with tempfile.TemporaryDirectory(dir=run_root) as d:
        return train(cfg, Path(d) / "run")


# --- CPU contention from other processes --------------------------------------------------------
# The machine may be shared (other people's tests). /proc/stat gives the busy CPU time of the whole
# machine and /proc/self/stat this process's own (its threads, plus children it has waited for), so
# their difference over an interval is the CPU that *other* processes used: the contention a
# measurement suffered. Blocks run while others used more than ~0.25 core are flagged.

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float:
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return (sum(v[:8]) - idle) / _HZ


def _self_busy_s() -> float:
    f = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / _HZ  # utime stime cutime cstime


class Contention:
    """``with Contention() as c: ...`` -> ``c.foreign_cores``: mean CPU cores used by other
    processes during the block (None where /proc is unavailable)."""

    def __enter__(self):
        try:
            self.m0, self.s0 = _machine_busy_s(), _self_busy_s()
        except (OSError, ValueError, IndexError):
            self.m0 = None
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.foreign_cores = None
        if self.m0 is not None:
            try:
                foreign = (_machine_busy_s() - self.m0) - (_self_busy_s() - self.s0)
                self.foreign_cores = max(0.0, foreign / max(self.wall, 1e-9))
            except (OSError, ValueError, IndexError):
                pass


def wait_for_quiet(threshold: float = 0.25, window: float = 1.0, max_wait: float = 30.0) -> dict:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores over
    a ``window``-second sample. Returns how long it waited and the last sample."""
    t0 = time.perf_counter()
    last = None
    while True:
        with Contention() as c:
            time.sleep(window)
        last = c.foreign_cores
        if last is None or last < threshold or time.perf_counter() - t0 >= max_wait:
            return {"waited_s": time.perf_counter() - t0, "foreign_cores": last}


QUIET = 0.25  # foreign cores below which a block counts as uncontended


# --- per-step timing of any training loop ---------------------------------------------------------


class StepClock:
    """Timestamps every optimizer step, through torch's global optimizer post-hook
    (``torch.optim.optimizer.register_optimizer_step_post_hook``): it times the real trainer
    without touching its code, and the plain loop the same way. The interval between two
    consecutive steps is one full training-loop cycle (zero_grad, scheduler, logging check, next
    batch, forward, losses, backward, optimizer step). With each stamp the machine's and this
    process's CPU counters are read (~20 us), so that each interval knows how much CPU other
    processes took meanwhile."""

    def __enter__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.stamps: list[tuple[float, float, float, float]] = []
        self.handle = register_optimizer_step_post_hook(self._hook)
        return self

    def _hook(self, *_):
        try:
            self.stamps.append((time.perf_counter(), _machine_busy_s(), _self_busy_s(), time.thread_time()))
        except (OSError, ValueError, IndexError):
            self.stamps.append((time.perf_counter(), float("nan"), float("nan"), time.thread_time()))

    def __exit__(self, *exc):
        self.handle.remove()

    def intervals(self, window: int = 1) -> list[dict]:
        """Step k (k >= 2; the first step has no start stamp and is excluded as warm-up): its
        seconds (``s``), the CPU seconds of the calling thread (``cpu_s``: with one torch thread all
        the work runs there, and this clock ignores time-slicing by other processes), and the other
        processes' mean CPU cores over it and ``window`` steps either side (the counters tick in
        10 ms jiffies, too coarse for one ~0.1 s step alone)."""
        out, st = [], self.stamps
        for k in range(1, len(st)):
            lo, hi = max(0, k - 1 - window), min(len(st) - 1, k + window)
            (t0, m0, s0, _), (t1, m1, s1, _) = st[lo], st[hi]
            foreign = ((m1 - m0) - (s1 - s0)) / (t1 - t0)
            out.append(
                {
                    "step": k + 1,
                    "s": st[k][0] - st[k - 1][0],
                    "cpu_s": st[k][3] - st[k - 1][3],
                    "foreign_cores": max(0.0, foreign) if foreign == foreign else None,
                }
            )
        return out


def quiet_steps(intervals: list[dict], threshold: float = 0.25) -> list[dict]:
    return [x for x in intervals if x["foreign_cores"] is not None and x["foreign_cores"] < threshold]


def bootstrap_ratio_ci(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b) (independent resampling of each side)."""
    import random

    rng = random.Random(seed)
    rs = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b))) for _ in range(n)
    )
    return rs[int(0.025 * n)], rs[int(0.975 * n) - 1]


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(a) / median(b), resampling pairs (a[i] and b[i] together)."""
    import random

    rng = random.Random(seed)
    idx = range(len(a))
    rs = []
    for _ in range(n):
        s = rng.choices(idx, k=len(a))
        rs.append(statistics.median([a[i] for i in s]) / statistics.median([b[i] for i in s]))
    rs.sort()
    return rs[int(0.025 * n)], rs[int(0.975 * n) - 1]


def step_sample(intervals: list[dict], log_every: int, min_quiet: int = 20) -> tuple[list[float], bool]:
    """Per-step wall seconds for the statistics: the quiet non-logging steps, or, when fewer than
    ``min_quiet`` of them exist (a busy machine), all non-logging steps; and whether quiet."""
    body = [x for x in intervals if (x["step"] - 1) % log_every != 0]
    q = quiet_steps(body)
    if len(q) >= min_quiet:
        return [x["s"] for x in q], True
    return [x["s"] for x in body], False


def cpu_sample(intervals: list[dict], log_every: int) -> list[float]:
    """Per-step CPU seconds of the main thread, non-logging steps (meaningful with one thread)."""
    return [x["cpu_s"] for x in intervals if (x["step"] - 1) % log_every != 0]
