"""``logger=mlflow``: the run in an MLflow tracking store (a local SQLite file, a folder, or a
tracking server), through ``MlflowClient`` in a thread of its own.

- parameters: the run's config, flattened to dotted keys (``optimizer.lr``, ``weighting.name``);
- metrics: every metrics record at its optimizer step (train: ``loss/<task>``, ``weight/<task>``,
  ``lr``; evaluations: ``val/<task>/<metric>``, ``val/score``, ``test/<task>/<metric>``);
- artifacts, at the end: summary.json, config.yaml, metrics.jsonl/csv, train.log, and
  ``checkpoints/best.pt`` (``log_checkpoint``); the status FINISHED, FAILED or KILLED;
- a sweep job (Hydra multirun) is a child run of one parent run per sweep (tag
  ``mlflow.parentRunId``), tagged with the sweep's folder, job number and overrides;
- a resume continues the same MLflow run (its id is kept in ``<run_dir>/mlflow.json``).

A tracking server that cannot be reached is found at the start (``/health``, within
``request_timeout_s``): one warning, and the run goes on without MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Any

from ...config.params import NonNegInt, Positive, Text
from . import (
    CHECKPOINT,
    LOGGER_BACKENDS,
    Backend,
    RunContext,
    RunEnd,
    SweepJob,
    metric_name,
    param_value,
    read_state,
    scalars,
    write_state,
)

STATE = "mlflow.json"
#: MLflow's limits per log_batch call
MAX_METRICS, MAX_PARAMS = 1000, 100


@LOGGER_BACKENDS.register("mlflow")
class MLflowBackend(Backend):
    outputs = (STATE,)
    requires = ("mlflow",)
    extra = "mlflow"
    needs = "MLflow tracking needs"

    def __init__(
        self,
        context: RunContext,
        *,
        tracking_uri: Annotated[str, Text("an MLflow tracking URI: sqlite:///mlflow.db, http://host:5000")]
        | None = None,
        experiment: Annotated[str, Text("an MLflow experiment name")] = "mtl",
        run_name: Annotated[str, Text("an MLflow run name")] | None = None,
        tags: dict[str, Annotated[str, Text("a tag value")]] | None = None,
        log_checkpoint: bool = True,
        request_timeout_s: Positive = 10.0,
        max_retries: NonNegInt = 2,
        **kwargs,
    ):
        super().__init__(context, **kwargs)
        self.uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.log_checkpoint = log_checkpoint
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.client: Any = None
        self.run_id: str | None = None

    # ---------------------------------------------------------------- the run's start
    def open(self, kept: list[dict]) -> None:
        # the client's HTTP timeout and retries, unless the environment sets them
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, self.request_timeout_s))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.max_retries))
        if self.uri and self.uri.startswith(("http://", "https://")):
            urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=self.request_timeout_s).close()
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=self.uri)
        uri = str(client.tracking_uri)
        exp_id = self._experiment_id()
        ctx = self.context
        state_file = ctx.run_dir / STATE
        state = read_state(state_file) if ctx.resumed else {}
        if state.get("run_id") and state.get("tracking_uri") == uri:  # a resume: the same run goes on
            self.run_id = state["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            kept = []  # already sent before the interruption
        else:
            tags = {"mtl.run_dir": str(ctx.run_dir)} | self.tags
            if ctx.sweep is not None:
                tags |= self._sweep_tags(exp_id, ctx.sweep)
            run = client.create_run(exp_id, run_name=self.run_name or ctx.name(), tags=tags)
            self.run_id = run.info.run_id
            self._params()
        write_state(state_file, {"tracking_uri": uri, "experiment_id": exp_id, "run_id": self.run_id})
        if kept:
            self.log(kept)

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # made meanwhile by another job of the sweep
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def _params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k[:250], param_value(v)) for k, v in self.context.params().items()]
        for i in range(0, len(params), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS])

    def _sweep_tags(self, exp_id: str, sweep: SweepJob) -> dict[str, str]:
        tags = {
            "mtl.sweep_dir": str(sweep.dir),
            "mtl.sweep_job": str(sweep.job),
            "mtl.sweep_overrides": param_value(" ".join(sweep.overrides), 5000),
        }
        parent = self._sweep_parent(exp_id, sweep)
        if parent:
            tags["mlflow.parentRunId"] = parent
        return tags

    def _sweep_parent(self, exp_id: str, sweep: SweepJob) -> str | None:
        """The sweep's parent run: made by the first job that gets here (an exclusive file in the
        sweep folder, so that jobs in other processes share it), read by the others."""
        key = hashlib.sha1(f"{self.client.tracking_uri}|{exp_id}".encode()).hexdigest()[:10]
        marker = sweep.dir / f".mlflow-parent-{key}.json"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            for _ in range(100):
                run_id = read_state(marker).get("run_id")
                if run_id:
                    return run_id
                time.sleep(0.1)
            return None
        tags = {"mtl.sweep_dir": str(sweep.dir), "mtl.sweep_parent": "true"}
        parent = self.client.create_run(exp_id, run_name=f"sweep {sweep.dir.name}", tags=tags)
        self.client.set_terminated(parent.info.run_id, "FINISHED")
        with os.fdopen(fd, "w") as f:
            json.dump({"run_id": parent.info.run_id}, f)
        return parent.info.run_id

    # ---------------------------------------------------------------- during the run
    def log(self, records: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(metric_name(k), v, now, int(r.get("step") or 0)) for r in records for k, v in scalars(r).items()
        ]
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS])

    # ---------------------------------------------------------------- the end
    def finish(self, end: RunEnd) -> None:
        if self.client is None or self.run_id is None:
            return
        for name, path in end.files.items():
            if name == CHECKPOINT and not self.log_checkpoint:
                continue
            folder = str(Path(name).parent)
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        self.client.set_terminated(self.run_id, end.status)
