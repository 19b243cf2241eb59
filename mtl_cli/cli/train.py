"""``mtl-train``: Hydra entry point. Checks the command line and the composed config first, so
that mistakes end with a clear message and exit code 2 (no traceback unless MTL_DEBUG=1), then
hands over to Hydra for the run or the multirun sweep."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ..config.locate import ENV, builtin_config_dir, register_search_path_plugin
from ..errors import Problem, RunInterrupted, UserError
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


#: exit codes of mtl-train (README, docs/guarantees.md)
EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 3

#: jobs of this process's sweep that failed: (run dir, error)
FAILED_JOBS: list[tuple[str, str]] = []


@hydra.main(config_path=str(builtin_config_dir()), config_name="train", version_base="1.3")
def _hydra_task(cfg: DictConfig) -> float:
    from ..train.api import train
    from ..train.trainer import objective_value

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        summary = train(cfg, hc.runtime.output_dir, list(hc.overrides.task))
    except RunInterrupted as e:
        sys.stderr.write(f"{e}\nContinue with: mtl-train resume={Path(e.checkpoint).parent.parent}\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except UserError as e:
        if debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        if multirun:  # one bad job does not stop the sweep; its error is in its run dir
            FAILED_JOBS.append((hc.runtime.output_dir, e.render().splitlines()[0]))
            return math.nan
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        if not multirun or debugging():
            raise
        # an unexpected failure of one job: recorded in its run dir (error.json, train.log), the sweep goes on
        sys.stderr.write(f"job {hc.job.num} failed: {type(e).__name__}: {e} (traceback in "
                         f"{hc.runtime.output_dir}/train.log)\n")
        FAILED_JOBS.append((hc.runtime.output_dir, f"{type(e).__name__}: {e}"))
        return math.nan
    if summary is not None and cfg.logger.console_summary:
        print(format_summary(summary), flush=True)
    return objective_value(summary)


def _value_of(argv: list[str], key: str) -> str | None:
    """The value of the last plain ``key=value`` override in ``argv``."""
    found = None
    for a in argv:
        if a.startswith(key + "="):
            found = a.split("=", 1)[1]
    return found


def replay_resume(argv: list[str]) -> list[str]:
    """``resume=<run dir or checkpoint>``: the run's own overrides (overrides.yaml) first, then the
    command line's, and run_dir set to that run, so the run continues as it was configured."""
    from ..train.api import NOT_REPLAYED
    from ..train.checkpoint import CheckpointError, find_checkpoint, run_dir_of

    resume = _value_of(argv, "resume")
    if resume in (None, "", "null", "auto"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise CheckpointError([Problem("resume", "resume=<path> continues one run, not a sweep", resume,
                                       fix="for a sweep set hydra.sweep.dir to the sweep's folder and resume=auto")])
    ckpt = find_checkpoint(resume, Path.cwd())
    if not ckpt.is_file():
        raise CheckpointError([Problem("resume", f"no checkpoint at {ckpt}", resume,
                                       fix="name a run directory holding checkpoints/last.pt, or a .pt file")])
    run = run_dir_of(ckpt)
    saved: list[str] = []
    if (run / "overrides.yaml").is_file():
        try:
            loaded = yaml.safe_load((run / "overrides.yaml").read_text()) or []
        except yaml.YAMLError as e:
            raise CheckpointError([Problem(str(run / "overrides.yaml"), f"cannot parse: {e}",
                                           fix="repair or delete the file")]) from None
        # hydra.* overrides are not replayed either: hydra.searchpath could bring configs (and an
        # allowed_targets) from anywhere into the run
        saved = [str(o) for o in loaded if str(o).lstrip("+~").split("=", 1)[0] not in NOT_REPLAYED
                 and not str(o).lstrip("+~").startswith("hydra")]
    rest = [a for a in argv if not a.lstrip("+~").startswith("run_dir=")]
    return saved + rest + [f"run_dir={run}"]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _take_config_dirs(argv)
        register_search_path_plugin()
        argv = replay_resume(argv)
        precheck(argv)
    except UserError as e:
        if debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(e.exit_code) from None
    sys.argv = [sys.argv[0], *argv]
    FAILED_JOBS.clear()
    try:
        _hydra_task()
    except BrokenPipeError:  # `mtl-train --help | head`: the reader left, nothing is wrong
        sys.stderr.close()
    if FAILED_JOBS:  # a sweep ran to its end, but not every job succeeded
        lines = [f"{len(FAILED_JOBS)} job(s) of the sweep failed (error.json and train.log in each):"]
        lines += [f"  - {d}: {msg}" for d, msg in FAILED_JOBS]
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(EXIT_FAILED)


if __name__ == "__main__":
    main()
