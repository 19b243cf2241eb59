"""Everything a run writes to its directory: metrics.jsonl/csv, checkpoints, summary.json, logs."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

log = logging.getLogger("mtl_cli")


def _clean(v: Any) -> Any:
    """JSON-safe values: NaN/inf become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_clean(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


class MetricsWriter:
    """metrics.jsonl: one JSON object per logged step or evaluation, flushed per line; and
    metrics.csv, the same records as a table (rewritten at each evaluation and at the end)."""

    def __init__(self, run_dir: Path, jsonl: bool = True, csv_: bool = True):
        self.records: list[dict] = []
        self.csv_path = run_dir / "metrics.csv" if csv_ else None
        # a new run starts the file afresh (resuming a run is a separate path)
        self.f = open(run_dir / "metrics.jsonl", "w", buffering=1) if jsonl else None

    def log(self, record: dict) -> None:
        record = _clean(record)
        self.records.append(record)
        if self.f is not None:
            self.f.write(json.dumps(record) + "\n")

    def write_csv(self) -> None:
        if self.csv_path is None or not self.records:
            return
        cols: list[str] = []
        for r in self.records:
            cols += [k for k in r if k not in cols]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.records)
        os.replace(tmp, self.csv_path)

    def close(self) -> None:
        self.write_csv()
        if self.f is not None:
            self.f.close()


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic write: temporary file, flush and fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TqdmHandler(logging.Handler):
    """Console log lines that do not break tqdm progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(run_dir: Path) -> list[logging.Handler]:
    """train.log in the run dir plus console output; returns the handlers to remove at the end."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    fh = logging.FileHandler(run_dir / "train.log")
    fh.setFormatter(fmt)
    ch = TqdmHandler()
    ch.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(fh)
    log.addHandler(ch)
    log.setLevel(logging.INFO)
    log.propagate = False
    return [fh, ch]


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"


def environment() -> dict:
    versions = {}
    for pkg in ("mtl-cli", "torch", "torchvision", "hydra-core", "omegaconf", "torchmetrics", "tqdm", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "git_commit": git_commit()}


def git_commit() -> str | None:
    """Commit of the source checkout mtl_cli runs from (or of the cwd), if any."""
    for where in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode == 0:
            return out.stdout.strip()
    return None
