"""Everything a run writes to its directory: metrics.jsonl/csv, checkpoints, summary.json, logs."""

from __future__ import annotations

import contextlib
import csv
import errno
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
from typing import IO, Any

import torch
from tqdm import tqdm

from ..errors import Problem, UserError

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


class OutputError(UserError):
    """The run directory cannot be written (no space, no permission, a file where a folder should be)."""

    title = "Output error"


_HINTS = {
    errno.ENOSPC: "free disk space or choose another run_dir (run_dir=/path/with/space)",
    errno.EDQUOT: "free space within your quota or choose another run_dir",
    errno.EACCES: "choose a run_dir you may write to (run_dir=...) or fix the folder's permissions",
    errno.EPERM: "choose a run_dir you may write to (run_dir=...) or fix the folder's permissions",
    errno.EROFS: "the file system is read-only: choose another run_dir",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another run_dir",
    errno.EISDIR: "a folder stands where a file is written: remove it or choose another run_dir",
}


@contextlib.contextmanager
def writing(path: Path):
    """Turn an OSError raised while writing ``path`` into an OutputError naming the path."""
    try:
        yield
    except OSError as e:
        if isinstance(e, UserError):
            raise
        where = e.filename or path
        reason = e.strerror or str(e)
        fix = _HINTS.get(e.errno, "check that the folder exists and may be written, or choose another run_dir")
        raise OutputError([Problem(str(path), f"cannot write {where}: {reason}", fix=fix)]) from e


def check_writable(path: Path | str, key: str = "run_dir") -> None:
    """Raise OutputError unless ``path`` is, or could be made, a folder this process may write to
    (checked on the nearest existing ancestor; nothing is created)."""
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(
            [Problem(key, f"cannot create {p}: {probe} is a file, not a folder", str(path), fix=_HINTS[errno.ENOTDIR])]
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(
            [Problem(key, f"cannot create {p}: no permission to write in {probe}", str(path), fix=_HINTS[errno.EACCES])]
        )


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with writing(path):
        with open(tmp, "w") as f:
            json.dump(_clean(obj), f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    with writing(path):
        path.write_text(text)


def make_run_dir(path: Path) -> None:
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_text("")
        probe.unlink()


class MetricsWriter:
    """metrics.jsonl: one JSON object per logged step or evaluation, flushed per line; and
    metrics.csv, the same records as a table (rewritten at each evaluation and at the end).

    ``keep`` (resuming): keep the first ``keep`` records of an existing metrics.jsonl (those written
    before the checkpoint; later ones, and a line cut by a kill, are dropped) and append after them,
    so every logged step has exactly one line.

    ``tensorboard``: every record also goes to TensorBoard event files in ``<run_dir>/tensorboard/``
    (see :class:`TensorBoardSink`); metrics.jsonl stays the source of truth.

    Construction touches no file; ``open()`` reads the kept records and opens the files.
    """

    def __init__(
        self, run_dir: Path, jsonl: bool = True, csv_: bool = True, keep: int | None = None, tensorboard: bool = False
    ):
        self.records: list[dict] = []
        self.csv_path = run_dir / "metrics.csv" if csv_ else None
        self.path = run_dir / "metrics.jsonl"
        self.jsonl = jsonl
        self.tb_dir = run_dir / "tensorboard" if tensorboard else None
        self.keep = keep
        self.f: IO[str] | None = None
        self.tb: TensorBoardSink | None = None

    def open(self) -> None:
        if self.keep is not None:
            self.records = self._read(self.keep)
        if self.tb_dir is not None:  # the kept records first: the event files mirror metrics.jsonl from its first line
            self.tb = TensorBoardSink(self.tb_dir, self.records)
        if self.jsonl:
            with writing(self.path):
                if self.keep is not None:  # rewrite atomically with the kept lines, then append
                    tmp = self.path.with_suffix(".jsonl.tmp")
                    with open(tmp, "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in self.records)
                    os.replace(tmp, self.path)
                self.f = open(self.path, "a" if self.keep is not None else "w", buffering=1)

    def _read(self, keep: int) -> list[dict]:
        records = []
        if self.path.is_file():
            with open(self.path) as f:
                for line in f:
                    if len(records) >= keep:
                        break
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a kill
                        break
        if len(records) < keep:
            log.warning(
                "%s has %d complete records, the checkpoint expects %d: the missing ones are lost",
                self.path,
                len(records),
                keep,
            )
        return records

    def __len__(self) -> int:
        return len(self.records)

    def log(self, record: dict) -> None:
        record = _clean(record)
        self.records.append(record)
        if self.f is not None:
            with writing(self.path):
                self.f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            self.tb.add(record)

    def write_csv(self) -> None:
        if self.csv_path is None or not self.records:
            return
        cols: list[str] = []
        for r in self.records:
            cols += [k for k in r if k not in cols]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with writing(self.csv_path):
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(self.records)
            os.replace(tmp, self.csv_path)

    def close(self) -> None:
        self.write_csv()
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class TensorBoardSink:
    """TensorBoard event files holding every metrics record as scalars at the record's ``step``:
    train records under their own names (``loss/<task>``, ``weight/<task>``, ``loss``, ``lr``,
    ``samples_per_s``; gradient diagnostics likewise), val and test records under their split
    (``val/<task>/<metric>``, ``val/score``, ``test/<task>/<metric>``). A null value (NaN in the
    run, e.g. a task without data in a logging interval) is left out.

    The event files are derived from metrics.jsonl and rewritten when the writer opens: a resumed
    run writes the records it keeps again and drops the old files, so TensorBoard shows exactly the
    records of metrics.jsonl, without the steps that were replayed after the checkpoint. Events
    are flushed at every evaluation and at the end (and every 30 s).
    """

    #: record fields that are not values
    FIELDS = ("split", "epoch", "step")
    #: splits whose values are shown under ``<split>/``
    PREFIXED = ("val", "test")

    def __init__(self, log_dir: Path, records: list[dict] = ()):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard: an optional extra (checked at validation)

        with writing(log_dir):
            log_dir.mkdir(parents=True, exist_ok=True)
            for old in log_dir.glob("events.out.tfevents.*"):
                old.unlink()
            self.writer = SummaryWriter(str(log_dir), flush_secs=30)
        for r in records:
            self.add(r, flush=False)
        self.writer.flush()

    @classmethod
    def scalars(cls, record: dict) -> dict[str, float]:
        """The TensorBoard tag and value of each number in ``record``."""
        split = record.get("split")
        prefix = f"{split}/" if split in cls.PREFIXED else ""
        return {
            prefix + k: float(v)
            for k, v in record.items()
            if k not in cls.FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    def add(self, record: dict, flush: bool = True) -> None:
        step = int(record.get("step") or 0)
        for tag, value in self.scalars(record).items():
            self.writer.add_scalar(tag, value, step)
        if flush and record.get("split") in self.PREFIXED:  # an evaluation: make it visible now
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TqdmHandler(logging.Handler):
    """Console log lines that do not break tqdm progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(run_dir: Path) -> list[logging.Handler]:
    """train.log in the run dir plus console output; returns the handlers to remove at the end."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    with writing(run_dir / "train.log"):
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
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": git_commit(),
    }


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
