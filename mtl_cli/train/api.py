"""``train(cfg)``: validate, then one run (:mod:`.run`) or, for ``baseline=stl``, one per task
(:mod:`.stl`). Separate from the CLI so that tests and notebooks call it directly with a composed
config."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..validation import validate
from .run import run_plan
from .stl import train_baselines


def train(cfg: DictConfig, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Train from a composed config; returns the summary (also written to summary.json).

    ``run_dir`` wins over ``cfg.run_dir``. ``cfg.resume`` (auto, or a run directory or checkpoint)
    continues a run. ``baseline=stl`` trains single-task baselines instead (train/stl.py) and
    returns their combined summary. Raises ConfigError/DataError/CheckpointError/OutputError for the user's
    mistakes, TrainingError when a run cannot go on, RunInterrupted after SIGTERM/SIGINT.
    """
    plan = validate(cfg)  # everything checked before anything is built or written
    run_dir = Path(run_dir if run_dir is not None else plan.cfg["run_dir"]).resolve()
    if plan.cfg["baseline"] == "stl":  # one single-task run per task in run_dir/<task>, then baselines.json
        return train_baselines(cfg, plan, run_dir, overrides)
    return run_plan(plan, run_dir, overrides)
