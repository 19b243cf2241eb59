"""Experiment trackers behind one interface: ``logger.backends.<name>: {settings}``, any number at once.

A backend is one module here that registers a :class:`Backend` subclass in
:data:`~mtl_cli.config.schema.LOGGER_BACKENDS` (plus one option in ``conf/logger/``). Its config keys
are the keyword-only parameters of its ``__init__``, with their value domains in the annotations
(:mod:`mtl_cli.config.params`); validation checks them, and refuses a backend whose packages
(``requires``) are missing, naming its pip ``extra``. Generic code never looks at a backend's name.

:class:`~mtl_cli.train.rundir.MetricsWriter` writes metrics.jsonl and metrics.csv itself (the run's
record, which a resume reads back) and fans every record out to :class:`Trackers`:

- ``open(kept)``: the run starts (``kept``: the records a resume keeps); ``log(records)``: new
  records; ``flush()``: after an evaluation; ``close()``: the writer closes (the run's metrics are
  complete); ``finish(end)``: the run has ended, its summary.json (or error.json) written, with
  :class:`RunEnd` naming its status and files.
- A backend with ``threaded = True`` (anything that talks to a server) runs in a thread of its own:
  a call of the trainer only puts the record in a bounded queue, so a slow server never slows a
  step. Local ones (``threaded = False``: TensorBoard files) run inline.
- A backend that raises (server down, disk full, a bug) is warned about once, on the ``mtl_cli``
  logger, and is off for the rest of the run: nothing reaches the trainer.

The run's end is the release of its run-directory lock (``rundir.on_release``), which comes after
summary.json or error.json is written; without a lock (a Trainer used directly), the writer's
``close()`` ends it. :func:`wait` waits for every threaded backend to finish its uploads, bounded
by each backend's ``close_timeout_s``: the Python API calls it before returning, ``mtl-train``
before its process exits (:func:`mtl_cli.cli.train.trackers_done`), and it runs at exit. Exit
hooks run last-registered first, and a tracker registers its own when it opens (W&B in
``wandb.init``), which would end its run under the thread still finishing it: after each
backend's ``open``, :func:`wait` is registered again, so it runs first. A backend still opening
when the process exits registers its hooks after that, hence the explicit wait of mtl-train.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config.params import PosInt, Positive
from ...config.schema import LOGGER_BACKENDS
from ...config.typecheck import flatten

log = logging.getLogger("mtl_cli")

#: record fields that are not values
FIELDS = ("split", "epoch", "step")
#: splits whose values are prefixed with ``<split>/``
PREFIXED = ("val", "test")
#: files of a run directory a tracker may keep with its run, in this order (those that exist)
RUN_FILES = (
    "summary.json",
    "config.yaml",
    "overrides.yaml",
    "data.json",
    "metrics.jsonl",
    "metrics.csv",
    "train.log",
    "error.json",
)
CHECKPOINT = "checkpoints/best.pt"


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record by name: train (and gradient) records under their own keys
    (``loss/<task>``, ``lr``), val and test records under their split (``val/<task>/<metric>``,
    ``val/score``); null values (NaN in the run) are left out."""
    split = record.get("split")
    prefix = f"{split}/" if split in PREFIXED else ""
    return {
        prefix + k: float(v)
        for k, v in record.items()
        if k not in FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


@dataclass
class SweepJob:
    """A job of a Hydra multirun (a sweep): its folder, number and overrides."""

    dir: Path  # hydra.sweep.dir
    job: int  # hydra.job.num
    overrides: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What a backend knows of the run when it is made."""

    run_dir: Path
    config: dict  # the run's config (config.yaml), plain
    resumed: bool  # a resume: the backend continues its earlier run where it can
    sweep: SweepJob | None = None

    def params(self) -> dict[str, Any]:
        """The config flattened to dotted keys (the run's parameters)."""
        return flatten({k: v for k, v in self.config.items() if k != "hydra"})

    def name(self) -> str:
        return self.run_dir.name if self.sweep is None else f"{self.sweep.dir.name}/{self.sweep.job}"


@dataclass
class RunEnd:
    """How the run ended: ``FINISHED`` (tested, summary.json written), ``FAILED`` (error.json) or
    ``KILLED`` (stopped by a signal or a crash), and the run directory's files to keep."""

    status: str
    files: dict[str, Path]  # name relative to the run directory -> path, as in RUN_FILES / CHECKPOINT
    summary: dict | None = None


class Backend:
    """One experiment tracker. Subclasses set the class attributes, take ``(context, *, keys...)``
    and implement the methods they need; every method may raise (the caller turns a raise into
    one warning and turns the backend off)."""

    requires: tuple[str, ...] = ()  # modules it imports (validation checks that they are installed)
    extra: str = ""  # the pip extra that installs them: pip install "mtl-cli[<extra>]"
    needs: str = ""  # the start of the message when they are missing: "<needs> the <module> package"
    threaded: bool = True  # own thread (a server may be slow); False: inline (local files)
    outputs: tuple[str, ...] = ()  # what it writes in the run directory (overwrite=true deletes them)

    def __init__(self, context: RunContext, *, close_timeout_s: Positive = 60.0, queue_size: PosInt = 10_000):
        self.context = context
        self.close_timeout_s = close_timeout_s
        self.queue_size = queue_size

    def open(self, kept: list[dict]) -> None:
        """The run starts; ``kept``: the records of metrics.jsonl a resume keeps (else empty)."""

    def log(self, records: list[dict]) -> None:
        """New metrics records, in order."""

    def flush(self) -> None:
        """An evaluation was logged: make what was sent visible."""

    def close(self) -> None:
        """The metrics writer closed: no record follows."""

    def finish(self, end: RunEnd) -> None:
        """The run has ended (see :class:`RunEnd`)."""


_BAD_NAME = re.compile(r"[^\w\-. /:]")


def metric_name(key: str) -> str:
    """A record key as a tracker's metric name: letters, digits and ``_-. /:`` (``~`` of the
    gradient cosines' pair names becomes ``-``, anything else ``_``)."""
    return _BAD_NAME.sub("_", key.replace("~", "-"))


def param_value(v: Any, limit: int = 6000) -> str:
    """A config value as a parameter string (JSON for lists and mappings), cut to ``limit``."""
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sweep_job(run_dir: Path) -> SweepJob | None:
    """The Hydra multirun job this run is, if it is one (its run directory inside the sweep's)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    try:
        if hc.mode != RunMode.MULTIRUN:
            return None
        sweep_dir = Path(hc.sweep.dir).absolute()
        if sweep_dir not in Path(run_dir).absolute().parents:  # a later run of the same process
            return None
        return SweepJob(sweep_dir, int(hc.job.num), [str(o) for o in hc.overrides.task])
    except Exception:  # noqa: BLE001 - no sweep information: an ordinary run
        return None


def write_state(path: Path, state: dict) -> None:
    """A backend's small state file in the run directory (its run id, for a resume)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


# ---------------------------------------------------------------- running backends safely
class _Runner:
    """Calls one backend's methods; the first exception is warned about once and turns it off."""

    def __init__(self, name: str, backend: Backend):
        self.name, self.backend = name, backend
        self.dead = False

    def _call(self, method: str, *args) -> None:
        if self.dead:
            return
        try:
            getattr(self.backend, method)(*args)
        except Exception as e:  # noqa: BLE001 - a tracker never stops the run
            self.dead = True
            log.warning(
                "logger backend %s failed and is off for the rest of the run (%s: %s); metrics.jsonl "
                "holds every record",
                self.name,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )

    def submit(self, method: str, *args) -> None:
        self._call(method, *args)

    def join(self, timeout: float | None) -> bool:
        return True


class _Threaded(_Runner):
    """A backend in a daemon thread of its own, fed through a bounded queue: ``submit`` never
    waits (a full queue drops the record, with one warning). Consecutive records go to the
    backend as one batch."""

    def __init__(self, name: str, backend: Backend):
        super().__init__(name, backend)
        self.q: queue.Queue = queue.Queue()  # records bounded in submit(); the few other calls always fit
        self.dropped = 0
        self.ended = False
        self.thread = threading.Thread(target=self._work, name=f"mtl-logger-{name}", daemon=True)
        self.thread.start()
        _THREADS.add(self)

    def submit(self, method: str, *args) -> None:
        if self.ended:
            return
        if method == "finish":
            self.ended = True
        if self.dead:
            if method == "finish":
                self.q.put(None)  # (the thread drains what waits and stops)
            return
        if method != "log" or self.q.qsize() < self.backend.queue_size:
            self.q.put((method, args))
            return
        self.dropped += 1
        if self.dropped == 1:
            log.warning(
                "logger backend %s cannot keep up (%d records waiting): records are dropped for it; "
                "metrics.jsonl holds every record",
                self.name,
                self.q.qsize(),
            )

    def _work(self) -> None:
        while True:
            item = self.q.get()
            if item is not None and item[0] == "log":
                batch, item = list(item[1][0]), ("log", None)
                while len(batch) < 1000:  # what else waits goes in the same call
                    try:
                        nxt = self.q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is not None and nxt[0] == "log":
                        batch += nxt[1][0]
                    else:
                        item = nxt
                        break
                self._call("log", batch)
            if item is None:
                break
            method, args = item
            if args is not None:
                self._call(method, *args)
            if method == "open":  # a tracker's own exit hook, registered in its open, runs after ours
                atexit.unregister(wait)
                atexit.register(wait)
            if method == "finish":
                break
        _THREADS.discard(self)

    def join(self, timeout: float | None) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


_THREADS: set[_Threaded] = set()


def wait(timeout: float | None = None) -> bool:
    """Wait until every threaded backend of this process has finished (uploads done); ``timeout``
    bounds the wait for each (default: its ``close_timeout_s``). True when all are done."""
    done = True
    for t in list(_THREADS):
        if not t.ended:  # a run that never ended (a Trainer used without its run): end it now
            t.submit("finish", RunEnd("KILLED", {}))
        ok = t.join(timeout if timeout is not None else t.backend.close_timeout_s)
        if not ok:
            log.warning(
                "logger backend %s is still sending after %.0f s; left behind (metrics.jsonl holds every record)",
                t.name,
                timeout if timeout is not None else t.backend.close_timeout_s,
            )
        done &= ok
    return done


atexit.register(wait)


class Trackers:
    """The backends of one run, fed by the metrics writer (see the module's documentation)."""

    def __init__(self, run_dir: Path, specs: dict[str, dict], config: dict, resumed: bool):
        self.run_dir = Path(run_dir)
        self.context = RunContext(self.run_dir, config, resumed, sweep_job(self.run_dir))
        self.runners: list[_Runner] = []
        self.tested = False
        self.ended = False
        self.opened_at = time.time()
        for name, settings in specs.items():
            cls = LOGGER_BACKENDS.get(name)
            try:
                backend = cls(self.context, **(settings or {}))
            except Exception as e:  # noqa: BLE001 - validation checks the keys; anything else: warn, go on
                log.warning("logger backend %s cannot start (%s: %s); it is off", name, type(e).__name__, e)
                continue
            self.runners.append((_Threaded if cls.threaded else _Runner)(name, backend))

    def _all(self, method: str, *args) -> None:
        for r in self.runners:
            r.submit(method, *args)

    def open(self, kept: list[dict]) -> None:
        self._all("open", list(kept))

    def log(self, record: dict) -> None:
        if record.get("split") == "test":
            self.tested = True
        self._all("log", [record])
        if record.get("split") in PREFIXED:
            self._all("flush")

    def close(self) -> None:
        self._all("close")

    def end(self) -> None:
        """The run has ended: each backend's ``finish`` with the status and files of the run."""
        if self.ended:
            return
        self.ended = True
        files = {n: self.run_dir / n for n in (*RUN_FILES, CHECKPOINT) if (self.run_dir / n).is_file()}
        fresh = {n: p for n, p in files.items() if _mtime(p) >= self.opened_at - 1}
        summary = None
        if "error.json" in fresh:
            status = "FAILED"
        elif self.tested or "summary.json" in fresh:
            status = "FINISHED"
        else:
            status = "KILLED"
        if "summary.json" not in fresh:
            files.pop("summary.json", None)  # an earlier run's (a resume after a finished run is refused anyway)
        if "error.json" not in fresh:
            files.pop("error.json", None)
        if "summary.json" in files:
            with contextlib.suppress(OSError, ValueError):
                summary = json.loads(files["summary.json"].read_text())
        self._all("finish", RunEnd(status, files, summary))


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
