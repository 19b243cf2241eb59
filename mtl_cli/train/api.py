"""``train(cfg)``: validate, prepare the run directory, fit. Separate from the CLI so that tests
and notebooks call it directly with a composed config."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.validate import validate
from .rundir import setup_logging, write_json
from .trainer import fit

log = logging.getLogger("mtl_cli")


def train(cfg: DictConfig, run_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """Train from a composed config; returns the summary (also written to summary.json).

    ``run_dir`` wins over ``cfg.run_dir``. Raises ConfigError/DataError for the user's mistakes.
    """
    plan = validate(cfg)  # everything checked before anything is built or written
    run_dir = Path(run_dir if run_dir is not None else plan.cfg["run_dir"]).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    plan.cfg["run_dir"] = str(run_dir)
    for stale in ("summary.json", "error.json"):  # left by an earlier run in the same directory
        (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plan.cfg)))
    if overrides is not None:
        (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    handlers = setup_logging(run_dir)
    try:
        log.info("run directory: %s", run_dir)
        return fit(plan, run_dir)
    except BaseException as e:
        log.removeHandler(handlers[1])  # the CLI prints the error itself; train.log keeps a copy
        log.error("training failed: %s: %s", type(e).__name__, e)
        write_json(run_dir / "error.json", {"type": type(e).__name__, "message": str(e)})
        raise
    finally:
        for h in handlers:
            logging.getLogger("mtl_cli").removeHandler(h)
            h.close()
