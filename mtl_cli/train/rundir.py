"""Everything a run writes to its directory: metrics.jsonl/csv, checkpoints, summary.json, logs."""

from __future__ import annotations

import atexit
import contextlib
import csv
import errno
import json
import logging
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Callable

import torch
from tqdm import tqdm

from ..errors import Problem, UserError
from ..tasks.loss_scale import record_losses, task_weights, warn_loss_scales
from .loggers import LOGGER_BACKENDS, Trackers, scalars

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
        probe = path / f".write_probe.{os.getpid()}"  # per process: two runs never share the file
        probe.write_text("")
        probe.unlink()


# ---------------------------------------------------------------- one run per run directory
LOCK = ".lock"

#: lock files this process holds: path -> its token (released at the end, or at exit)
_HELD: dict[Path, str] = {}
#: lock files this process holds -> what to call when it releases them (the run's end)
_ON_RELEASE: dict[Path, list[Callable[[], None]]] = {}


def on_release(run_dir: Path, fn: Callable[[], None]) -> bool:
    """Call ``fn`` when this process releases its lock on ``run_dir`` (the run has ended: its
    summary.json or error.json is written, or a signal stopped it). False, and nothing is
    registered, when this process holds no lock there."""
    want = (Path(run_dir) / LOCK).absolute()
    for path in _HELD:
        if path.absolute() == want:
            _ON_RELEASE.setdefault(path, []).append(fn)
            return True
    return False


def _released(path: Path) -> None:
    for fn in _ON_RELEASE.pop(path, []):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the run has ended; what follows it must not fail it
            log.warning("after the run: %s: %s", type(e).__name__, e)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot; Linux), None where unknown: with the
    pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def _alive(owner: dict) -> bool:
    """Whether the process that wrote ``owner`` (a lock of this host) still runs."""
    boot = owner.get("boot_id")
    if boot and _boot_id() and boot != _boot_id():
        return False  # the machine restarted since
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    start = owner.get("process_start")
    now = _process_start(pid)
    return not (start and now and start != now)  # else: the pid now names another process


class RunDirLock:
    """``<run_dir>/.lock``: one run at a time in a run directory.

    The file (JSON: pid, host, boot id, process start, start time, command) appears atomically
    (written beside it, then hard-linked into place; ``O_CREAT|O_EXCL`` where the file system has
    no hard links). A lock of this host whose process no longer runs (dead pid, pid reused,
    machine restarted) is stale: it is taken over, with a warning in ``note``. A live lock, or one
    from another host (whose processes cannot be checked from here), is refused with an
    OutputError naming the owner and how to remove the lock if it is stale.

    ``release()`` removes the file if it is still this one's; a run releases it in a ``finally``
    (success, error, signal), and an ``atexit`` hook releases whatever this process still holds.
    A kill -9 leaves the file: the next run finds it stale.
    """

    #: an unreadable lock file (being written without hard links, or cut short) this old is stale
    UNREADABLE_STALE_S = 30.0

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.token = uuid.uuid4().hex
        self.note: str | None = None  # a stale lock that was taken over

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _content(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
            "token": self.token,
        }

    def acquire(self) -> None:
        for _ in range(5):  # each retry follows a stale lock removed (or one that vanished meanwhile)
            if self._create():
                _HELD[self.path] = self.token
                return
            owner = self._read()
            if owner is None:  # gone since: try again
                continue
            why = self._stale(owner)
            if why is None:
                raise self._refusal(owner)
            self._take_over(owner, why)
        raise OutputError(
            [Problem("run_dir", f"cannot lock {self.path}: other runs keep taking it", str(self.run_dir))]
        )

    def _create(self) -> bool:
        """Create the lock file with its content, atomically; False if it exists."""
        data = json.dumps(self._content(), indent=2) + "\n"
        tmp = self.run_dir / f"{LOCK}.{os.getpid()}.{self.token[:8]}.tmp"
        with writing(self.path):
            tmp.write_text(data)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links on this file system: exclusive create, then write
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as f:
                    f.write(data)
                return True
            finally:
                tmp.unlink(missing_ok=True)

    def _read(self) -> dict | None:
        """The lock's content; None if the file is gone; {} if it cannot be read as a lock."""
        for _ in range(10):
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return None
            except OSError:
                return {}
            try:
                owner = json.loads(text)
                return owner if isinstance(owner, dict) else {}
            except ValueError:
                time.sleep(0.05)  # being written (a file system without hard links)
        return {}

    def _stale(self, owner: dict) -> str | None:
        """Why the lock is stale, or None when its run may still be running."""
        if not owner:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it vanished"
            return f"it is unreadable and {age:.0f} s old" if age > self.UNREADABLE_STALE_S else None
        if owner.get("host") != socket.gethostname():
            return None  # its process cannot be checked from here
        if owner.get("pid") == os.getpid() and owner.get("process_start") == _process_start(os.getpid()):
            # this very process: held, unless a lock object of it let go without removing the file
            return None if self.path in _HELD else "this process holds no lock on it"
        return None if _alive(owner) else f"process {owner.get('pid')} no longer runs"

    def _take_over(self, owner: dict, why: str) -> None:
        """Remove a stale lock, under a short-lived guard so that two runs finding the same stale
        lock do not both take it."""
        guard = self.run_dir / f"{LOCK}.takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > self.UNREADABLE_STALE_S:
                    guard.unlink()  # left by a process killed in these few lines
            time.sleep(0.1)
            return
        except OSError as e:
            raise OutputError([Problem("run_dir", f"cannot write in {self.run_dir}: {e}", str(self.run_dir))]) from e
        os.close(fd)
        try:
            if self._read() == owner:  # still the stale one, not a lock taken meanwhile
                self.path.unlink(missing_ok=True)
                who = _describe(owner) if owner else "an unreadable lock"
                self.note = f"took over the stale lock {self.path} of {who}: {why}"
        finally:
            guard.unlink(missing_ok=True)

    def _refusal(self, owner: dict) -> OutputError:
        if not owner:
            msg = f"is locked by another run: {self.path} is being written or cannot be read"
        else:
            msg = f"is in use by another run: {_describe(owner)}"
            if owner.get("host") != socket.gethostname():
                msg += f" (another host: whether it still runs cannot be checked from {socket.gethostname()})"
        return OutputError(
            [
                Problem(
                    "run_dir",
                    msg,
                    str(self.run_dir),
                    fix=f"choose another run_dir; if you are sure that run has ended (its machine crashed), "
                    f"delete {self.path} and run again",
                )
            ]
        )

    def release(self) -> None:
        """Remove the lock file if it is still this one's (not a forked child's to remove)."""
        if _HELD.get(self.path) != self.token:
            return
        del _HELD[self.path]
        with contextlib.suppress(OSError):
            owner = json.loads(self.path.read_text())
            if owner.get("token") == self.token and owner.get("pid") == os.getpid():
                self.path.unlink()
        _released(self.path)


def _describe(owner: dict) -> str:
    cmd = owner.get("command")
    where = f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}"
    return where + (f" ({cmd})" if cmd else "")


@atexit.register
def _release_all() -> None:
    """At exit: the locks a run could not release itself (its ``finally`` did not run)."""
    for path, token in list(_HELD.items()):
        with contextlib.suppress(OSError, ValueError):
            owner = json.loads(path.read_text())
            if owner.get("token") == token and owner.get("pid") == os.getpid():
                path.unlink()
        _HELD.pop(path, None)
        _released(path)


#: what marks a run directory as holding a run: its files a new run would overwrite
RUN_MARKERS = ("summary.json", "checkpoints/last.pt")


def refuse_to_overwrite(run_dir: Path, resume, overwrite: bool, markers: tuple[str, ...] = RUN_MARKERS) -> None:
    """A new run (no ``resume``) into a directory that holds a run, finished or interrupted, is
    refused unless ``overwrite=true`` (then :func:`start_over` clears it)."""
    if resume not in (None, "", "null") or overwrite:
        return
    found = [m for m in markers if (run_dir / m).is_file()]
    if not found:
        return
    what = "a finished run" if "summary.json" in found else "an interrupted run"
    raise OutputError(
        [
            Problem(
                "run_dir",
                f"{run_dir} holds {what} ({', '.join(found)}); a new run would overwrite it",
                str(run_dir),
                fix="continue it with resume=auto (same run_dir), choose another run_dir, or start "
                "over in it with overwrite=true (deletes its checkpoints, metrics and logs)",
            )
        ]
    )


def check_run_dir(run_dir: Path | str, resume=None, overwrite: bool = False, stl: bool = False) -> None:
    """The checks of a run's start, read-only, for callers that write into ``run_dir`` before the
    run starts (the CLI, before Hydra writes ``.hydra/`` there): refuse a directory that a live
    run holds, or that holds a run without ``resume`` or ``overwrite=true`` (``stl``: a
    baseline=stl run, marked by its summary.json or baselines.json). Nothing is created."""
    run_dir = Path(run_dir).expanduser().absolute()
    lock = RunDirLock(run_dir)
    owner = lock._read() if lock.path.exists() else None
    if owner is not None and lock._stale(owner) is None:
        raise lock._refusal(owner)
    refuse_to_overwrite(run_dir, resume, overwrite, ("summary.json", "baselines.json") if stl else RUN_MARKERS)


#: what ``overwrite=true`` deletes before the new run starts
RUN_OUTPUTS = (
    "checkpoints",
    "summary.json",
    "error.json",
    "metrics.jsonl",
    "metrics.csv",
    "train.log",
    "tensorboard",
    "data.json",
    "baselines.json",
)


def tracker_outputs() -> tuple[str, ...]:
    """Files and folders the logger backends write in a run directory (their ``outputs``)."""
    out: list[str] = []
    for name in LOGGER_BACKENDS.names():
        out += [o for o in LOGGER_BACKENDS.get(name).outputs if o not in RUN_OUTPUTS and o not in out]
    return tuple(out)


def start_over(run_dir: Path) -> list[str]:
    """``overwrite=true``: delete the outputs of the run that ``run_dir`` holds; returns those
    deleted. Config and overrides files are rewritten by the new run."""
    gone = []
    for name in RUN_OUTPUTS + tracker_outputs():
        p = run_dir / name
        with writing(p):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
            else:
                continue
        gone.append(name)
    return gone


class MetricsWriter:
    """metrics.jsonl: one JSON object per logged step or evaluation, flushed per line; and
    metrics.csv, the same records as a table (rewritten at each evaluation and at the end).

    ``keep`` (resuming): keep the first ``keep`` records of an existing metrics.jsonl (those written
    before the checkpoint; later ones, and a line cut by a kill, are dropped) and append after them,
    so every logged step has exactly one line.

    Every record also goes to the run's experiment trackers (:mod:`mtl_cli.train.loggers`):
    ``tensorboard`` (event files in ``<run_dir>/tensorboard/``, see :class:`TensorBoardSink`) and
    ``backends``, ``{name: settings}`` as in ``logger.backends``. ``backends=None`` and ``config=None``
    (the trainer's call) read both from the run's config.yaml when the writer opens, in the main
    process only. A tracker that fails warns once and is off; metrics.jsonl stays the source of truth.

    Construction touches no file; ``open()`` reads the kept records and opens the files.
    """

    def __init__(
        self,
        run_dir: Path,
        jsonl: bool = True,
        csv_: bool = True,
        keep: int | None = None,
        tensorboard: bool = False,
        backends: dict[str, dict | None] | None = None,
        config: dict | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.records: list[dict] = []
        self.csv_path = run_dir / "metrics.csv" if csv_ else None
        self.path = run_dir / "metrics.jsonl"
        self.jsonl = jsonl
        self.tensorboard = tensorboard
        self.backends = backends
        self.config = config
        self.keep = keep
        self.f: IO[str] | None = None
        self.trackers: Trackers | None = None
        self._ends_with_lock = False
        self._scales_checked = False  # task losses compared once per run (tasks/loss_scale.py)

    def open(self) -> None:
        if self.keep is not None:
            self.records = self._read(self.keep)
        self._scales_checked = any(len(record_losses(r)) > 1 for r in self.records)
        specs = self._tracker_specs()
        if specs:  # the kept records first: trackers mirror metrics.jsonl from its first line
            self.trackers = Trackers(self.run_dir, specs, self.config or {}, self.keep is not None)
            self.trackers.open(self.records)
            self._ends_with_lock = on_release(self.run_dir, self.trackers.end)
        if self.jsonl:
            with writing(self.path):
                if self.keep is not None:  # rewrite atomically with the kept lines, then append
                    tmp = self.path.with_suffix(".jsonl.tmp")
                    with open(tmp, "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in self.records)
                    os.replace(tmp, self.path)
                self.f = open(self.path, "a" if self.keep is not None else "w", buffering=1)

    def _tracker_specs(self) -> dict[str, dict]:
        """{backend name: settings} of the run's trackers (``tensorboard=True`` is the
        ``tensorboard`` backend); a backend set to null is off."""
        backends = self.backends
        if backends is None or self.config is None:
            cfg = self._run_config()
            if self.config is None:
                self.config = cfg
            if backends is None:
                backends = (cfg.get("logger") or {}).get("backends") if self._is_main() else None
        specs = {k: dict(v) for k, v in (backends or {}).items() if isinstance(v, dict)}
        if self.tensorboard:
            specs.setdefault("tensorboard", {})
        return specs

    def _run_config(self) -> dict:
        import yaml

        try:
            cfg = yaml.safe_load((self.run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return cfg if isinstance(cfg, dict) else {}

    @staticmethod
    def _is_main() -> bool:
        from . import distributed

        return distributed.current().is_main

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
        if not self._scales_checked:  # the run's first task losses: a warning when they differ by orders of magnitude
            losses = record_losses(record)
            if len(losses) > 1:
                self._scales_checked = True
                warn_loss_scales(losses, weights=task_weights(self.config))
        record = _clean(record)
        self.records.append(record)
        if self.f is not None:
            with writing(self.path):
                self.f.write(json.dumps(record) + "\n")
        if self.trackers is not None:
            self.trackers.log(record)

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
        if self.trackers is not None:
            self.trackers.close()
            if not self._ends_with_lock:  # no run lock (a Trainer used directly): the run ends here
                self.trackers.end()


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
        return scalars(record)

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
