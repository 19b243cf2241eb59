"""``logger=wandb``: the run in Weights & Biases, offline by default: the W&B run is written to
``<run_dir>/wandb/offline-run-*/`` (``wandb sync`` uploads it later from a machine with network).

- config: the run's config, flattened to dotted keys;
- history: one row per metrics record, with ``trainer/step`` (the optimizer step) as the x-axis
  of every metric (train ``loss/<task>``, ``lr``; ``val/...``, ``test/...``);
- summary: the test metrics and the selection objective, from summary.json;
- files, at the end: summary.json and config.yaml (``checkpoints/best.pt`` with ``log_checkpoint``);
- a sweep job (Hydra multirun) is in the group of its sweep (the sweep folder's name), job type
  ``sweep``; a resume continues the same W&B run (its id is kept in ``<run_dir>/wandb.json``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

from ...config.params import Text
from ...config.typecheck import flatten
from . import CHECKPOINT, LOGGER_BACKENDS, Backend, RunContext, RunEnd, read_state, scalars, write_state

STATE = "wandb.json"
STEP = "trainer/step"


@LOGGER_BACKENDS.register("wandb")
class WandbBackend(Backend):
    outputs = (STATE, "wandb")
    requires = ("wandb",)
    extra = "wandb"
    needs = "Weights & Biases logging needs"

    def __init__(
        self,
        context: RunContext,
        *,
        project: Annotated[str, Text("a W&B project name")] = "mtl",
        entity: Annotated[str, Text("a W&B entity (user or team)")] | None = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        dir: Annotated[str, Text("a folder for the W&B run files")] | None = None,
        name: Annotated[str, Text("a W&B run name")] | None = None,
        tags: list[Annotated[str, Text("a tag")]] | None = None,
        log_checkpoint: bool = False,
        **kwargs,
    ):
        super().__init__(context, **kwargs)
        self.project, self.entity, self.mode = project, entity, mode
        self.dir = dir
        self.name = name
        self.tags = list(tags or [])
        self.log_checkpoint = log_checkpoint
        self.run: Any = None

    def open(self, kept: list[dict]) -> None:
        import wandb

        ctx = self.context
        state_file = ctx.run_dir / STATE
        state = read_state(state_file) if ctx.resumed else {}
        resume = bool(state.get("id"))
        sweep = ctx.sweep
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(self.dir or ctx.run_dir),
            name=self.name or ctx.name(),
            tags=self.tags or None,
            group=sweep.dir.name if sweep is not None else None,
            job_type="sweep" if sweep is not None else "train",
            config=ctx.params() if not resume else None,
            id=state.get("id"),
            resume="allow" if resume else None,
            settings=wandb.Settings(silent=True, console="off", disable_git=True, save_code=False, reinit="create_new"),
        )
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        if sweep is not None:
            self.run.config.update({"sweep.dir": str(sweep.dir), "sweep.job": sweep.job}, allow_val_change=True)
        write_state(state_file, {"id": self.run.id, "project": self.project, "mode": self.mode})
        if kept and not resume:
            self.log(kept)

    def log(self, records: list[dict]) -> None:
        for r in records:
            row = scalars(r)
            if row:
                self.run.log({STEP: int(r.get("step") or 0), **row})

    def finish(self, end: RunEnd) -> None:
        if self.run is None:
            return
        if end.summary:
            test = flatten({"test": end.summary.get("test") or {}})
            self.run.summary.update({k.replace(".", "/"): v for k, v in test.items() if isinstance(v, (int, float))})
            objective = (end.summary.get("objective") or {}).get("value")
            if isinstance(objective, (int, float)):
                self.run.summary["objective"] = objective
        for name, path in end.files.items():  # files in the W&B run's folder are kept (and synced) with it
            if name in ("summary.json", "config.yaml") or (name == CHECKPOINT and self.log_checkpoint):
                dest = Path(self.run.dir) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        self.run.finish(exit_code=0 if end.status == "FINISHED" else 1)
        self.run = None
