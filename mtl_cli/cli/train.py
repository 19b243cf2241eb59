"""``mtl-train``: Hydra entry point. Checks the command line and the composed config first, so
that mistakes end with a clear message and exit code 2 (no traceback unless MTL_DEBUG=1), then
hands over to Hydra for the run or the multirun sweep."""

from __future__ import annotations

import logging
import math
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..config.locate import ENV, builtin_config_dir, register_search_path_plugin
from ..errors import UserError
from .precheck import precheck
from .summary import format_summary

# torch (through ..train) is imported only when a run starts: --help and --cfg answer at once

log = logging.getLogger("mtl_cli")


def _flag(name: str) -> bool:
    """An environment switch: on for 1/true/yes/on, off when unset, empty, 0, false, no or off."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def debugging() -> bool:
    return _flag("MTL_DEBUG") or _flag("HYDRA_FULL_ERROR")


def _take_config_dirs(argv: list[str]) -> list[str]:
    """Move ``--config-dir X`` / ``-cd X`` / ``--config-dir=X`` into MTL_CONFIG_DIR (searched
    before the built-ins, so user files override built-in ones)."""
    rest, dirs, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if dirs:
        missing = [d for d in dirs if not os.path.isdir(d)]
        if missing:
            raise UserError(f"--config-dir: directory not found: {', '.join(os.path.abspath(d) for d in missing)}")
        prev = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
        merged = [os.path.abspath(d) for d in dirs] + prev
        os.environ[ENV] = os.pathsep.join(dict.fromkeys(merged))  # in order, each once
    return rest


@hydra.main(config_path=str(builtin_config_dir()), config_name="train", version_base="1.3")
def _hydra_task(cfg: DictConfig) -> float:
    from ..train.api import train
    from ..train.trainer import objective_value

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        summary = train(cfg, hc.runtime.output_dir, list(hc.overrides.task))
    except UserError as e:
        if debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        if multirun:  # one bad job does not stop the sweep; its error is in its run dir
            return math.nan
        raise SystemExit(2) from None
    if summary is not None and cfg.logger.console_summary:
        print(format_summary(summary), flush=True)
    return objective_value(summary)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _take_config_dirs(argv)
        register_search_path_plugin()
        precheck(argv)
    except UserError as e:
        if debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0], *argv]
    try:
        _hydra_task()
    except BrokenPipeError:  # `mtl-train --help | head`: the reader left, nothing is wrong
        sys.stderr.close()


if __name__ == "__main__":
    main()
