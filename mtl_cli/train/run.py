"""One run of a validated plan: find the checkpoint to resume (if any), lock and prepare the run
directory, train, and record a failure in ``error.json`` and ``train.log``.

A run holds ``<run_dir>/.lock`` from before its first write to its end (success, error or
signal; see ``rundir.RunDirLock``): a second run into the same directory is refused while the
first runs. A new run (no ``resume``) into a directory that holds a run is refused unless
``overwrite=true``."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from ..config.locate import resume_command
from ..errors import ConfigError, Problem, RunInterrupted, UserError
from ..validation import Plan
from . import distributed
from .checkpoint import check_same_config, find_checkpoint, load_checkpoint, run_dir_of
from .rundir import RunDirLock, make_run_dir, refuse_to_overwrite, setup_logging, start_over, write_json, write_text
from .trainer import Trainer

log = logging.getLogger("mtl_cli")

#: overrides that a resume does not replay from a run's overrides.yaml (where to resume, starting
#: over, and the callables a config may name: those the user must grant again on their own command line)
NOT_REPLAYED = ("resume", "run_dir", "allowed_targets", "overwrite")


def _resume_point(cfg: dict, run_dir: Path) -> tuple[Path, dict | None, Path | None]:
    """(run dir, checkpoint state or None, checkpoint path or None) for ``cfg['resume']``."""
    resume = cfg.get("resume")
    if resume in (None, "", "null"):
        return run_dir, None, None
    ckpt = find_checkpoint(str(resume), run_dir)
    if ckpt is None:  # resume=auto in a directory without a checkpoint: a new run
        return run_dir, None, None
    state = load_checkpoint(ckpt)
    if str(resume) != "auto":  # a named checkpoint continues in its own run directory
        run_dir = run_dir_of(ckpt)
    diff = check_same_config(state["config_yaml"], cfg, ckpt)
    for k, a, b in diff:
        log.warning("resume_strict=false: %s was %r in the checkpoint, %r now", k, a, b)
    return run_dir, state, ckpt


def overwrite_requested(cfg: dict) -> bool:
    """``overwrite=true``: start over in a run directory that holds a run. Refused together with
    a ``resume``, which asks for the opposite."""
    overwrite = bool(cfg.get("overwrite", False))
    if overwrite and cfg.get("resume") not in (None, "", "null"):
        raise ConfigError(
            [
                Problem(
                    "overwrite",
                    f"overwrite=true starts the run over, resume={cfg.get('resume')} continues it",
                    True,
                    fix="give one of them: resume=auto to continue, overwrite=true to start over",
                )
            ]
        )
    return overwrite


def run_plan(plan: Plan, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """Train one validated ``plan`` into ``run_dir`` (or continue it, per ``plan.cfg['resume']``);
    returns the summary (also written to summary.json). The run directory is locked for the run.

    With several processes, rank 0 finds the checkpoint, locks and prepares the run directory and
    writes everything; the others get the run directory and the checkpoint from it (or its
    error, raised on every process) and write nothing."""
    comm = distributed.current()
    held: dict = {}

    def prepare() -> tuple[Path, dict | None, Path | None]:
        overwrite = overwrite_requested(plan.cfg)
        where, state, ckpt = _resume_point(plan.cfg, run_dir)
        make_run_dir(where)
        lock = RunDirLock(where).__enter__()  # before any write, and nothing written when refused
        try:
            refuse_to_overwrite(where, plan.cfg.get("resume"), overwrite)
            held["deleted"] = start_over(where) if overwrite else []
        except BaseException:
            lock.__exit__(*sys.exc_info())
            raise
        held["lock"] = lock
        return where, state, ckpt

    where, state, ckpt = comm.on_main(prepare)  # rank 0 prepares; every process gets the outcome
    if not comm.is_main:
        return _run_follower(plan, where, state, ckpt)
    lock = held["lock"]
    try:
        return _run_locked(plan, where, state, ckpt, overrides, lock.note, held["deleted"])
    finally:
        lock.__exit__(None, None, None)


def _run_follower(plan: Plan, run_dir: Path, state: dict | None, ckpt: Path | None) -> dict:
    """A process other than rank 0: the same training, no file and no log of its own (rank 0
    reports; an error is raised here too, for the launcher's exit status)."""
    plan.cfg["run_dir"] = str(run_dir)
    quiet = logging.getLogger("mtl_cli")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return Trainer(plan, run_dir, state, ckpt).fit()


def _run_locked(
    plan: Plan,
    run_dir: Path,
    state: dict | None,
    ckpt: Path | None,
    overrides: list[str] | None,
    took_over: str | None,
    deleted: list[str],
) -> dict:
    """The run itself, ``run_dir`` locked: train.log, the trainer, and the failure records."""
    plan.cfg["run_dir"] = str(run_dir)
    handlers = setup_logging(run_dir)
    try:
        log.info("run directory: %s", run_dir)
        if took_over:
            log.warning("%s", took_over)
        if deleted:
            log.warning("overwrite=true: deleted %s of the earlier run in %s", ", ".join(deleted), run_dir)
        for note in plan.warnings:
            log.warning("%s", note)
        trainer = Trainer(plan, run_dir, state, ckpt)
        # written once the run (or the resume) is set up: a refused resume leaves the run as it was
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(plan.cfg)))
        if overrides is not None:
            write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        return trainer.fit()
    except RunInterrupted as e:
        log.removeHandler(handlers[1])  # the CLI prints it; train.log keeps a copy
        log.warning("%s; continue with: %s", e, resume_command(run_dir))
        raise
    except BaseException as e:
        log.removeHandler(handlers[1])  # the CLI prints the error itself; train.log keeps a copy
        if isinstance(e, UserError):
            log.error("training failed: %s", e)
        else:  # an unexpected failure: the traceback goes to train.log
            log.error("training failed: %s: %s\n%s", type(e).__name__, e, traceback.format_exc())
        write_json(run_dir / "error.json", {"type": type(e).__name__, "message": str(e)})
        raise
    finally:
        for h in handlers:
            logging.getLogger("mtl_cli").removeHandler(h)
            h.close()
