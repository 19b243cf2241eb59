"""The Python API: what mtl-train, mtl-eval and mtl-predict do, called from Python (a notebook, a
script, a tuner), with the same checks, the same run directory and the same values.

    from mtl_cli import compose, train, evaluate, predict

    cfg = compose(["tasks=shapes", "trainer.max_epochs=1"])   # a DictConfig, checked
    result = train(cfg)                       # TrainResult: run_dir, summary, test, val
    evaluate(result, split="val")["metrics"]  # {task: {metric: value}}
    predict(result, "examples/images/")       # one record per input

- :func:`compose` runs mtl-train's checks of a command line (overrides, group options, unknown
  keys with close matches, the whole config validated) and raises the same ConfigError, then
  composes with Hydra's compose API over the package's conf/ and the user's config directories
  (``MTL_CONFIG_DIR``, or ``config_dir=``). No Hydra application is started.
- :func:`train` checks the run directory, writes ``.hydra/`` (config, Hydra's settings, the
  overrides) as Hydra does for mtl-train, and trains with ``train.api.train``: the run directory
  holds what mtl-train's holds, and the summary has the same values.
- :func:`evaluate` and :func:`predict` load a finished run (``runs.load_run``) and call the code of
  mtl-eval and mtl-predict; they return the values (evaluate also writes ``eval/<...>.json``, as
  mtl-eval does; predict writes a file only when given ``output``).

Everything is imported on first call: ``import mtl_cli`` loads neither torch nor Hydra.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, Problem

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["TrainResult", "compose", "evaluate", "predict", "train"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class _Origin:
    """How compose() made a config: its overrides, Hydra's node, and its YAML (to tell when it changed)."""

    overrides: list[str]
    hydra: Any
    text: str


#: id of a config compose() returned -> where it came from (dropped when the config is collected)
_ORIGINS: dict[int, _Origin] = {}


def compose(overrides: Sequence[str] = (), *, config_dir: PathLike | Sequence[PathLike] | None = None) -> DictConfig:
    """The config ``mtl-train <overrides>`` would run, after the same checks.

    ``overrides`` are mtl-train's ``key=value`` arguments (``group=option``, ``+key=value``,
    ``resume=<run dir>`` replays that run's overrides). ``config_dir`` adds directories searched
    before the built-in configs, as ``mtl-train --config-dir`` does (for the rest of the process:
    it is prepended to ``MTL_CONFIG_DIR``). Raises :class:`~mtl_cli.errors.ConfigError` listing
    every problem, with mtl-train's messages. The run directory is checked by :func:`train`.
    """
    from omegaconf import OmegaConf

    from .cli.train import check_command_line, take_config_dirs
    from .config.compose import compose as compose_config

    if isinstance(overrides, (str, bytes)):
        raise TypeError("compose() takes a list of overrides, e.g. compose(['trainer.max_epochs=1'])")
    argv = [str(o) for o in overrides]
    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise ConfigError(
            [
                Problem(
                    f,
                    "a command-line flag: compose() takes overrides only",
                    f,
                    fix="give config directories as compose(..., config_dir=...); sweeps and --cfg are mtl-train's",
                )
                for f in flags
            ]
        )
    dirs = [] if config_dir is None else [config_dir] if isinstance(config_dir, (str, os.PathLike)) else config_dir
    take_config_dirs([x for d in dirs for x in ("--config-dir", os.fspath(d))])
    argv = check_command_line(argv, run_dir_checks=False)
    full = compose_config(argv, return_hydra_config=True)
    cfg = OmegaConf.masked_copy(full, [str(k) for k in full if k != "hydra"])
    key = id(cfg)
    _ORIGINS[key] = _Origin(argv, full.hydra, OmegaConf.to_yaml(cfg))
    weakref.finalize(cfg, _ORIGINS.pop, key, None)
    return cfg


def _origin(cfg: DictConfig) -> _Origin | None:
    """How compose() made ``cfg``, if it did and the config has not been changed since."""
    from omegaconf import OmegaConf

    origin = _ORIGINS.get(id(cfg))
    if origin is None or OmegaConf.to_yaml(cfg) != origin.text:
        return None
    return origin


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the run directory and its summary (summary.json's content).

    ``os.fspath(result)`` is the run directory, so a result can be passed to :func:`evaluate` and
    :func:`predict`, or anywhere a path is expected."""

    run_dir: Path
    summary: dict

    @property
    def test(self) -> dict:
        """``{task: {metric: value}}`` on the test split at the selected epoch."""
        return self.summary.get("test") or {}

    @property
    def val(self) -> dict:
        """``{task: {metric: value}}`` on the val split at the selected epoch."""
        return self.summary.get("val_selected") or {}

    @property
    def objective(self) -> float | None:
        """The selection score of ``trainer.monitor`` at the selected epoch (higher is better)."""
        return (self.summary.get("objective") or {}).get("value")

    def __fspath__(self) -> str:
        return str(self.run_dir)


def _write_hydra_dir(run_dir: Path, cfg: DictConfig, origin: _Origin) -> None:
    """``run_dir/.hydra/``: config.yaml, hydra.yaml and overrides.yaml, as Hydra writes them for
    mtl-train (mtl-eval and mtl-predict read the folder the run was started in from hydra.yaml)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict, read_write

    from .train.rundir import make_run_dir, write_text

    hydra = OmegaConf.create({"hydra": OmegaConf.to_container(origin.hydra, resolve=False)})
    with read_write(hydra), open_dict(hydra):
        hydra.hydra.runtime.output_dir = str(run_dir)
        hydra.hydra.mode = RunMode.RUN.name
        hydra.hydra.overrides.hydra.append("hydra.mode=RUN")  # as Hydra records a run's mode
    folder = run_dir / ".hydra"
    make_run_dir(folder)
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text(folder / "hydra.yaml", OmegaConf.to_yaml(hydra))
    write_text(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(origin.overrides))))


def _one_process(cfg: DictConfig) -> None:
    """train() runs in this process: ``trainer.devices=N`` (N > 1) needs mtl-train's launcher."""
    from .train import distributed

    devices = cfg.trainer.get("devices", "auto")
    if isinstance(devices, int) and devices > 1 and distributed.environment() is None:
        raise ConfigError(
            [
                Problem(
                    "trainer.devices",
                    "train() trains in this Python process; several processes are started by mtl-train",
                    devices,
                    allowed="auto or 1 here",
                    fix=f"run mtl-train trainer.devices={devices} ..., or torchrun a script that calls train()",
                )
            ]
        )


def train(cfg: DictConfig | Sequence[str] = (), run_dir: PathLike | None = None) -> TrainResult:
    """Train as ``mtl-train`` would: ``cfg`` from :func:`compose`, or a list of overrides.

    ``run_dir`` wins over ``cfg.run_dir``. The run directory is checked first (a live run or a
    finished one there is refused unless ``resume`` or ``overwrite=true``), then written as
    mtl-train writes it; the end-of-run table is printed when ``logger.console_summary`` is true.
    Returns a :class:`TrainResult`. Raises ConfigError, DataError, CheckpointError, OutputError
    (mtl-train's exit 2), TrainingError (exit 1) and RunInterrupted (SIGTERM or Ctrl-C: exit 3),
    with mtl-train's messages.

    A config changed after compose() trains too, with a warning: its run directory has no
    overrides, so ``mtl-train resume=<run dir>`` cannot replay them (``resume=auto`` with the
    same config works).
    """
    from omegaconf import DictConfig

    from .cli.precheck import check_run_start
    from .cli.summary import format_summary
    from .cli.train import configure_threads
    from .train.api import train as train_config
    from .validation import validate

    if not isinstance(cfg, DictConfig):
        cfg = compose(cfg)
    origin = _origin(cfg)
    if origin is None:
        warnings.warn(
            "train(): this config was not made by compose() or was changed since, so the run directory "
            "gets no overrides.yaml and no .hydra/; mtl-train resume=<run dir> cannot replay it",
            stacklevel=2,
        )
        validate(cfg)  # compose() did it for its own configs
    _one_process(cfg)
    target = Path(run_dir if run_dir is not None else cfg.run_dir).expanduser().absolute()
    check_run_start(cfg, target)
    if origin is not None:
        _write_hydra_dir(target, cfg, origin)
    busy = configure_threads(str(cfg.get("device", "auto")))
    if busy:
        sys.stderr.write(busy + "\n")
    summary = train_config(cfg, target, list(origin.overrides) if origin is not None else None)
    if summary is not None and cfg.logger.console_summary and "objective" in summary:
        print(format_summary(summary), flush=True)
    return TrainResult(Path(summary.get("run_dir") or target), summary)


def evaluate(
    run: PathLike,
    *,
    checkpoint: str = "best",
    split: str = "test",
    limit: int | None = None,
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
    save: bool = True,
) -> dict:
    """Metrics of a finished run, as ``mtl-eval <run> checkpoint=... split=... <overrides>``.

    ``run`` is a run directory (or a :class:`TrainResult`); ``overrides`` are mtl-eval's config
    overrides (``data.*``, ``datasets.*``, ``device``, ...). Returns the record mtl-eval writes:
    ``metrics`` ({task: {metric: value}}), ``samples``, ``checkpoint``, ``step``, ``epoch``,
    ``split``, ``overrides``, ``limit``; with ``save`` (the default) it is also written to
    ``<run>/eval/<split>-<checkpoint>[-<hash>].json``, whose path is under ``file``.
    """
    from .cli.evaluate import eval_options, evaluate_run, evaluation_record, save_evaluation
    from .runs import load_run

    limit, batch_size = eval_options(split, limit, batch_size)
    loaded = load_run(Path(os.fspath(run)), checkpoint, [str(o) for o in overrides])
    record, out = evaluation_record(loaded, evaluate_run(loaded, split, limit, batch_size), split, limit)
    if save:
        save_evaluation(record, out)
        record = record | {"file": str(out)}
    return record


def predict(
    run: PathLike,
    inputs: PathLike | Sequence[PathLike],
    *,
    checkpoint: str = "best",
    output: PathLike | None = None,
    batch_size: int = 64,
    resize: bool | str | None = None,
    dataset: str | None = None,
    overrides: Sequence[str] = (),
) -> list[dict]:
    """Predictions of a finished run, as ``mtl-predict <run> input=<inputs> ...``.

    ``inputs``: a file, a folder, a glob or a CSV list of images, or a table of features (csv
    runs); several as a list. ``resize``: None (auto: what the source did in training), True or
    False. Returns one record per input, ``{"input": name, <task>: {...}}``: the objects
    mtl-predict writes to a .jsonl file. Dense tasks write their PNGs beside ``output`` (or under
    ``<run>/predictions/``, as mtl-predict does); ``output`` (.csv or .jsonl) also writes the records.
    """
    from .cli.predict import default_output, input_paths, masks_folder, predict_options, predict_run, write_records
    from .runs import load_run

    out, policy, size = predict_options(output, resize, batch_size)
    given = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = input_paths([os.fspath(p) for p in given])
    loaded = load_run(Path(os.fspath(run)), checkpoint, [str(o) for o in overrides])
    records = predict_run(loaded, paths, size or 64, policy, dataset, masks_folder(out or default_output(loaded)))
    if out is not None:
        write_records(records, out)
    return records
