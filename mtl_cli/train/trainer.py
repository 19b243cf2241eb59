"""The training loop, outer loop first: epochs, optimizer steps, micro-batches.

``Trainer.fit`` runs the epochs left (all of them, or from where a resumed checkpoint stopped),
then tests the selected model and writes summary.json. ``train_epoch`` takes the epoch from the
``TrainStream`` in groups, one group per optimizer step: ``trainer.accumulate_grad_batches``
micro-batches, the epoch's last group possibly fewer. ``train_step`` runs ``forward_backward`` on
each micro-batch of its group, then ``optimizer_step`` (unscale, clip, optimizer and scheduler
step). Only between optimizer steps does the loop log, stop at ``trainer.max_steps``, write the
``trainer.checkpoint_every`` checkpoint and answer SIGTERM/SIGINT, so a checkpoint never holds
part of an accumulation. ``end_epoch`` validates (every ``trainer.eval_every`` epochs and at the
end) and writes ``checkpoints/last.pt``.

Where the host waits for the device (a sync; on CPU there is nothing to wait for):

- every micro-batch: the non-finite check of the [T] losses (one ``.tolist()``), unless
  ``trainer.on_nonfinite=ignore``; with fp16 and a method that needs task gradients, reading the
  GradScaler's scale (``get_scale()``);
- every optimizer step: the non-finite check of the global gradient norm (``bool(...)``), unless
  ``on_nonfinite=ignore`` or fp16; with fp16, ``scaler.step`` reads the GradScaler's inf flags
  instead, and a skipped step reads its scale;
- every ``logger.log_every`` optimizer steps: the summed losses and weights (one ``.tolist()``);
  losses, weights and presence counts accumulate on the device in between;
- every ``logger.grad_diagnostics_every`` optimizer steps: the task gradients' norms and cosines;
- inside ``weighting.backward`` and ``on_step_end``: whatever the method reads (the gradient
  engine, e.g., checks its task gradients for non-finite values; see ``mtl_cli.weighting``).

A skipped step changes nothing in the model: the running statistics of its normalization layers
(BatchNorm's ``running_mean``/``running_var``/``num_batches_tracked``), which every training forward
updates, are copied before the step's first forward and put back when the step is dropped (one
fused device copy per optimizer step with ``on_nonfinite=skip``, when the model has such layers).

Construction builds the run's objects and, on a resume, checks the checkpoint's model against the
model before anything else; no file is written until ``fit`` opens the run directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..build import build_model, build_optimizer, build_scheduler, build_tasks, build_weighting
from ..data.base import PRIMARY, with_prefix
from ..errors import ConfigError, Problem, RunInterrupted, TrainingError
from ..results.baselines import load_baselines, warn_if_settings_differ
from ..results.delta_m import delta_m_report
from ..tasks.base import LossComputer
from ..validation import Plan
from ..weighting.base import BackwardContext
from . import distributed
from .batches import DeviceDataset, Loader, check_workers, make_loader, to_device
from .checkpoint import (
    CheckpointError,
    TopK,
    all_finite,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .ema import WeightEMA
from .evaluate import EarlyStopping, Selector, evaluate
from .rundir import MetricsWriter, environment, peak_memory_mb, write_json
from .sampling import Group, MicroBatch, TrainStream

log = logging.getLogger("mtl_cli")
#: the most tasks whose metrics the epoch line and the progress bar name one by one (beyond: the
#: first half of them and a count; every value is in metrics.jsonl)
SHOWN_TASKS = 8


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def autocast_for(precision: str, device: torch.device):
    if precision == "32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    micro: int = 0  # micro-batches seen
    train_time: float = 0.0  # seconds spent in training steps (not evaluation)


class Trainer:
    """Owns the objects of one run; ``fit()`` trains, selects, tests and returns the summary.

    ``resume``: a checkpoint dict (``checkpoint.load_checkpoint``) to continue from; everything the
    run's future depends on is restored (see ``state``), so the resumed run ends as the
    uninterrupted one would have. A checkpoint of another model is refused here, before the run
    directory is touched.
    """

    def __init__(self, plan: Plan, run_dir: Path, resume: dict | None = None, resume_path: Path | None = None):
        self.plan, self.run_dir = plan, run_dir
        self.settings, self.log_settings = plan.trainer, plan.logger
        self.comm = distributed.current()  # one process unless torchrun / Slurm started several
        self.device = resolve_device(plan.cfg["device"])
        if self.comm.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.comm.local_rank)
        self._check_same_config()
        seed_everything(plan.cfg["seed"], self.settings.deterministic)
        self.t_start = time.perf_counter()
        self.tasks = build_tasks(plan)
        self.names = [t.name for t in self.tasks]
        self.compute_losses = LossComputer(self.tasks)
        self._build_data()
        self.model = build_model(plan, self.tasks).to(self.device)
        if resume is not None:  # first: a checkpoint of another model changes nothing in the run dir
            # with trainer.ema the checkpoint's model is the average: training goes on from ema.raw
            trained = resume["ema"]["raw"] if isinstance(resume.get("ema"), dict) else resume["model"]
            load_model_state(self.model, trained, resume_path or run_dir)
        if self.settings.channels_last:  # 4-D weights (convolutions); inputs follow in to_device
            self.model.to(memory_format=torch.channels_last)
        self.weighting = build_weighting(plan, self.tasks).to(self.device)
        problems = self.weighting.model_problems(self.model, str(plan.cfg["weighting"]["name"]))
        if problems:
            raise ConfigError(problems)
        self.ddp = self._wrap_for_processes()
        compile_model(self.model, self.settings)
        t = self.settings
        self.ema = WeightEMA(self.model, t.ema, t.ema_warmup) if t.ema is not None else None
        self.early = EarlyStopping(t.early_stopping, t.early_stopping_min_delta)
        self.optimizer = build_optimizer(plan, self.model, self.weighting)
        self.scheduler, self.interval = build_scheduler(plan, self.optimizer, self._scheduler_length())
        # a scheduler that reads a metric (ReduceLROnPlateau) steps on the monitored score after each validation
        self.on_metric = self.scheduler is not None and steps_on_metric(self.scheduler)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.settings.precision == "fp16")
        self.autocast = autocast_for(self.settings.precision, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # running statistics that a training forward updates in place, and their copy from before
        # the current step (restored when the step is dropped); none kept when no step is ever
        # dropped (on_nonfinite=ignore; stop ends the run instead)
        self.norm_stats = norm_statistics(self.model) if self.settings.on_nonfinite == "skip" else []
        self._norm_stats_before = [b.clone() for b in self.norm_stats]
        lg = self.log_settings
        keep = resume["metrics_records"] if resume is not None else None
        main = self.comm.is_main  # only rank 0 writes the run directory
        self.metrics = MetricsWriter(run_dir, lg.jsonl and main, lg.csv and main, keep, lg.tensorboard and main)
        # baseline_dir: single-task baselines for delta_m (summary.json; trainer.monitor=delta_m selects by it)
        self.baselines = None
        if plan.cfg.get("baseline_dir"):
            self.baselines = load_baselines(plan.cfg["baseline_dir"])
            warn_if_settings_differ(self.baselines, plan.cfg, plan.cfg["baseline_dir"])
        base_val = {n: b["val"] for n, b in self.baselines["tasks"].items()} if self.baselines else None
        self.selector = Selector(self.settings.monitor, self.tasks, base_val)
        self.prog = Progress()
        self.history: list[dict] = []
        self.ckpt_dir = run_dir / "checkpoints"
        self.top_k = TopK(self.settings.save_top_k, self.ckpt_dir / "top")
        self.skipped = 0  # optimizer steps skipped for non-finite losses or gradients
        self._skip = False  # something in this step is non-finite (known on the host): drop its update
        self._skip_why: list[str] = []
        # on_nonfinite=skip decides on the device (no host read in the step): this step's flags, and
        # the flags of the steps not yet accounted for (read at the next log, epoch end or checkpoint)
        n_tasks = len(self.tasks)
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)  # something non-finite
        self._bad_tasks = torch.zeros(n_tasks, dtype=torch.bool, device=self.device)  # which losses
        self._bad_grad = torch.zeros((), dtype=torch.bool, device=self.device)  # the gradient (losses finite)
        # (step, [bad, grad, tasks..., flags...], host reasons, what each of the flags says)
        self._pending: list[tuple[int, torch.Tensor, str, list[tuple[str, list[str] | None]]]] = []
        self._flags: list[tuple[str, list[str] | None, torch.Tensor]] = []  # this step's ctx.skip_if
        self._weighting_before: dict[str, torch.Tensor] = {}
        self._stop_signal: int | None = None  # SIGTERM/SIGINT received: checkpoint after this step
        self._written: dict[str, int] = {}  # checkpoint kind -> the step it was last written at (this process)
        n = len(self.tasks)
        self.loss_acc = torch.zeros(n, device=self.device)  # summed on the device between logs
        self.weight_acc = torch.zeros(n, device=self.device)
        self.count_acc = torch.zeros(n, device=self.device)  # micro-batches in which each task had a batch
        self._present: dict[tuple[str, ...], torch.Tensor] = {}
        self._present_rows: dict[tuple[str, ...], list[int]] = {}  # the same on the host
        self.samples, self.t_log = 0, time.perf_counter()
        if resume is not None:
            self._restore(resume, resume_path or run_dir)

    # ---------------------------------------------------------------- several processes
    def _check_same_config(self) -> None:
        """Every process must run the same config (one given another override would train
        something else in lock step): compared by digest, refused on every process."""
        if not self.comm.active:
            return
        cfg = {k: v for k, v in self.plan.cfg.items() if k not in ("run_dir", "resume")}
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
        digests = self.comm.all_gather_object(digest)
        if len(set(digests)) > 1:
            odd = [r for r, d in enumerate(digests) if d != digests[0]]
            raise ConfigError(
                [
                    Problem(
                        "config",
                        f"the processes of the run were given different configs (ranks {odd} differ from rank 0)",
                        fix="start every process with the same command line and config directories",
                    )
                ]
            )

    def _wrap_for_processes(self) -> DistributedDataParallel | None:
        """With several processes: SyncBatchNorm when asked for, and DistributedDataParallel for
        methods that only read the losses (its hooks average the gradients during the backward).
        Gradient methods form the task gradients themselves: the engine all-reduces them (or their
        Gramian) and the trainer averages the rest at the step's end (``Comm.sync_grads``)."""
        if not self.comm.active:
            return None
        problems = self.weighting.data_parallel_problems()
        if problems:
            raise ConfigError(problems)
        if self.settings.sync_batchnorm:
            if self.device.type != "cuda":
                raise ConfigError(
                    [
                        Problem(
                            "trainer.sync_batchnorm",
                            "SyncBatchNorm synchronises on GPUs only",
                            True,
                            fix="set trainer.sync_batchnorm=false on CPUs (each process keeps its own statistics)",
                        )
                    ]
                )
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if "grads" in self.weighting.requires:
            return None
        # parameters a step may leave unused: other datasets' heads, other inputs' stems
        unused = len(self.plan.used_datasets()) > 1 or not getattr(type(self.model), "single_input", True)
        ddp = DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
        ddp.register_comm_hook(self.comm, _counted_allreduce)  # DDP's own all-reduce, its bytes counted
        return ddp

    def _check_enough_data(self, dataset: str, sizes: dict, train_loader) -> None:
        """Each process needs at least one training batch and one evaluation sample: more
        processes than that is a config error (the same on every process)."""
        short = []
        if len(train_loader) == 0:
            short.append(f"train has {sizes['train']} samples, fewer than {self.comm.world} processes")
        for split in ("val", "test"):
            if sizes[split] < self.comm.world:
                short.append(f"{split} has {sizes[split]} samples, fewer than {self.comm.world} processes")
        if short:
            raise ConfigError(
                [
                    Problem(
                        "data" if dataset == PRIMARY else f"datasets.{dataset}",
                        "too little data for this many processes: " + "; ".join(short),
                        self.comm.world,
                        fix="start fewer processes, or use more data",
                    )
                ]
            )

    def _restore(self, state: dict, path: Path) -> None:
        """Continue from a checkpoint (the model is loaded already); the global RNG states last,
        after everything is built. A checkpoint whose parts do not fit this run (a crafted or
        foreign one that passed the structure check) is a CheckpointError; the top-k list is
        restored last, so its clean-up of checkpoints/top/ happens only once all else fits."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.weighting.load_state_dict(state["weighting"])
            if self.ema is not None and isinstance(state.get("ema"), dict):
                self.ema.load(state["model"], state["ema"])
            if "early_stopping" in state:
                self.early.load_state_dict(state["early_stopping"])
            self.prog = Progress(**state["progress"])
            self.selector.load_state_dict(state["selector"])
            self.history = [dict(h) for h in state["history"]]
            saved_world = int(state.get("world", 1))
            if saved_world == self.comm.world:
                self.stream.load_state_dict(state["stream"])
            else:  # another global batch: positions mean other samples; the epoch starts over
                log.warning(
                    "resuming with %d processes a run that had %d: the data order differs from the "
                    "uninterrupted run's; epoch %d starts again from its first batch",
                    self.comm.world,
                    saved_world,
                    self.prog.epoch + 1,
                )
            acc = state["accumulators"]
            self.loss_acc.copy_(acc["loss"])
            self.weight_acc.copy_(acc["weight"])
            self.count_acc.copy_(acc["count"])
            self.samples = acc["samples"]
            self.skipped = state["skipped"]
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:200]
            raise CheckpointError(
                [
                    Problem(
                        "resume",
                        f"{path} does not fit this run: {type(e).__name__}: {first}",
                        fix="resume with the run's own settings, or from another checkpoint of the run",
                    )
                ]
            ) from None
        if self.comm.is_main:
            self.top_k.load_state_dict(state["top_k"], path)
        if Path(path).resolve() == (self.ckpt_dir / "last.pt").resolve():
            self._written["last"] = self.prog.step  # for messages: the step last.pt holds
        ranks = state.get("rng_ranks")
        if self.comm.active and isinstance(ranks, list) and len(ranks) == self.comm.world:
            set_rng_state(ranks[self.comm.rank])  # each process continues its own random stream
        else:
            set_rng_state(state["rng"])
        log.info("resumed from %s: epoch %d, step %d", path, self.prog.epoch, self.prog.step)

    def _build_data(self) -> None:
        """Loaders of every dataset that an enabled task reads; keys of datasets other than
        `data` are prefixed with ``<dataset>/`` (see ``data.base.qualify``). What data.json will
        hold is kept in ``data_info``."""
        t, seed = self.settings, self.plan.cfg["seed"]
        ebs = t.eval_batch_size or 2 * t.batch_size
        train, self.val_loaders, self.test_loaders, sizes = {}, {}, {}, {}
        for d in self.plan.used_datasets():
            splits = self.plan.sources[d].load()
            splits["train"] = self._labelled_rows(d, splits["train"])
            splits = {k: with_prefix(v, "" if d == PRIMARY else f"{d}/") for k, v in splits.items()}
            sizes[d] = {k: len(v) for k, v in splits.items()}
            where = {"rank": self.comm.rank, "world": self.comm.world}
            if t.data_on_device:
                splits = {k: self._on_device(d, k, v) for k, v in splits.items()}
            where |= {"local_processes": int(os.environ.get("LOCAL_WORLD_SIZE", "1"))}
            train[d] = make_loader(splits["train"], t.batch_size, True, seed, t.num_workers, self.device, **where)
            self.val_loaders[d] = make_loader(splits["val"], ebs, False, seed, t.num_workers, self.device, **where)
            self.test_loaders[d] = make_loader(splits["test"], ebs, False, seed, t.num_workers, self.device, **where)
            if self.comm.active:
                self._check_enough_data(d, sizes[d], train[d])
        self.stream = TrainStream(train, t.sampling, t.temperature, t.epoch_length, seed, t.limit_train_batches)
        # artifacts as the sources hold them after load() (statistics, label maps): the merged
        # spec's copy was taken before loading
        specs = self.plan.specs
        info = {
            "splits": next(iter(sizes.values())),
            **(specs[PRIMARY].artifacts if PRIMARY in specs else self.plan.spec.artifacts),
        }
        if len(sizes) > 1 or PRIMARY not in sizes:
            info |= {"datasets": sizes, "sampling": self.stream.describe()}
            others = {d: specs[d].artifacts for d in sizes if d != PRIMARY and d in specs and specs[d].artifacts}
            if others:
                info["dataset_artifacts"] = others
        self.data_info = info
        self.tasks_of = {d: [task for task in self.tasks if task.dataset == d] for d in sizes}

    def _labelled_rows(self, dataset: str, train):
        """The training rows of ``dataset`` (held in memory) that carry a label of at least one
        enabled task: a row labelled only for disabled tasks adds nothing to any loss, and kept,
        it would dilute every batch (a single-task baseline of one School school would train on
        batches of about one labelled row in a hundred). Said in the log; a split with no labelled
        row at all is left as it is."""
        masks = getattr(train, "masks", None)
        targets = [t.own_target for t in self.tasks if t.dataset == dataset]
        if not isinstance(masks, dict) or not hasattr(train, "subset") or not all(k in masks for k in targets):
            return train
        keep = torch.zeros(len(train), dtype=torch.bool)
        for k in targets:
            m = masks[k]
            keep |= m.reshape(m.shape[0], -1).any(dim=1) if m.dim() > 1 else m.bool()
        kept = int(keep.sum())
        if kept in (0, len(train)):
            return train
        log.info(
            "dataset %s: %d of %d training rows have no label of an enabled task (%s) and are left out",
            dataset,
            len(train) - kept,
            len(train),
            ", ".join(targets),
        )
        return train.subset(keep.nonzero().squeeze(1))

    def _on_device(self, dataset: str, split: str, ds):
        """``trainer.data_on_device``: a dataset held in memory, copied to the device once; one
        read from files stays where it is (said once, in the log)."""
        if hasattr(ds, "__getitems__"):
            return DeviceDataset(ds, self.device)
        if split == "train":
            log.warning(
                "trainer.data_on_device: dataset %s is read from files, not held in memory: its batches are "
                "copied to the device each step (set trainer.data_on_device=false to silence this)",
                dataset,
            )
        return ds

    def _scheduler_length(self) -> int:
        """Scheduler steps in the whole run: optimizer steps, or epochs for interval=epoch."""
        t = self.settings
        if self.plan.cfg["scheduler"].get("interval", "step") == "epoch":
            return t.max_epochs
        total = t.max_epochs * math.ceil(len(self.stream) / t.accumulate_grad_batches)
        return min(total, t.max_steps) if t.max_steps is not None else total

    # ---------------------------------------------------------------- the run: epochs
    def fit(self) -> dict:
        """Open the run directory, train the epochs left, test the selected model; returns the
        summary (also in summary.json)."""
        self.open_run_dir()
        self._log_model_size()
        try:
            with self._signals():
                self.model.train()
                for epoch in range(self.prog.epoch, self.settings.max_epochs):
                    if self.early.stopped_at is not None:  # (resumed after it stopped, e.g. during the test)
                        break
                    reached_max_steps = self.train_epoch(epoch)
                    self.end_epoch(last=reached_max_steps or epoch + 1 == self.settings.max_epochs)
                    self._stop_if_signalled()
                    if reached_max_steps or self.early.stopped_at is not None:
                        break
            return self.finish()
        except RuntimeError as e:
            if not str(e).startswith("DataLoader worker (pid"):
                raise
            raise self._worker_died(str(e)) from e
        finally:  # the run's worker processes end with it, whatever keeps the trainer alive
            self.close_loaders()

    def close_loaders(self) -> None:
        for loader in [*self.stream.loaders.values(), *self.val_loaders.values(), *self.test_loaders.values()]:
            if isinstance(loader, Loader):
                loader.close()
        self.stream._iters.clear()

    def _worker_died(self, what: str) -> TrainingError:
        """A DataLoader worker process died (:func:`batches.check_workers` raises it after the step
        or before a checkpoint, or the loader when it waits for a batch): no checkpoint is written, as
        the step it was in may be half done. Stop signals sent to the run do not kill workers
        (``batches.Loader``); this is something else: the out-of-memory killer, a signal sent to
        the worker alone."""
        first = what.strip().splitlines()[0]
        return TrainingError(
            f"step {self.prog.step + 1} (epoch {self.prog.epoch + 1}): a data loading worker process died "
            f"({first}); something outside the run ended it (the out-of-memory killer, a signal sent to "
            f"that process alone). Nothing was written after it. {self._checkpoints_note()}; continue "
            "with resume=auto (same run_dir). Fewer workers (trainer.num_workers, 0: none) use less memory"
        )

    def open_run_dir(self) -> None:
        """The run's first writes: data.json, metrics.jsonl (a resume keeps the checkpoint's
        records), and no summary.json or error.json left by an earlier run or attempt. Only rank
        0 writes."""
        if not self.comm.is_main:
            return
        for stale in ("summary.json", "error.json"):
            (self.run_dir / stale).unlink(missing_ok=True)
        write_json(self.run_dir / "data.json", self.data_info)
        self.metrics.open()

    def _log_model_size(self) -> None:
        g = self.model.parameter_groups()
        log.info(
            "model: %s shared parameters, %s task-specific (%s)",
            f"{g['shared']:,}",
            f"{sum(v for k, v in g.items() if k != 'shared'):,}",
            self.device,
        )

    def train_epoch(self, epoch: int) -> bool:
        """The epoch's optimizer steps (those left, on a resume); returns True when
        ``trainer.max_steps`` is reached. Logging, signals and checkpoints between the steps."""
        if self._max_steps_reached():
            return True
        bar = self._progress_bar(epoch)
        t0 = time.perf_counter()
        for group in self.stream.groups(self.settings.accumulate_grad_batches):
            stepped = self.train_step(group)
            check_workers()  # a data loading worker that died during the step ends the run here
            bar.update(len(group))
            if stepped and self.prog.step % self.log_settings.log_every == 0:
                self.log_train(epoch, bar)
            if self._max_steps_reached():
                break
            if self._stop_requested():
                bar.close()
                self.prog.train_time += time.perf_counter() - t0
                self._stop_if_signalled()
            if stepped and self._checkpoint_due():
                self.prog.train_time += time.perf_counter() - t0
                self.save("last")
                t0 = time.perf_counter()  # writing the checkpoint is not training time
        bar.close()
        self.prog.train_time += time.perf_counter() - t0
        return self._max_steps_reached()

    def end_epoch(self, last: bool) -> None:
        """After the epoch's steps: the epoch schedules, validation when due (always after the
        ``last`` epoch), and last.pt."""
        self._account_skips()
        self.stream.end_epoch()
        self.prog.epoch += 1
        if self.scheduler is not None and self.interval == "epoch" and not self.on_metric:
            self.scheduler.step()
        self.weighting.on_epoch_end(self.prog.epoch)
        if last or self.prog.epoch % self.settings.eval_every == 0:
            self.validate()
        self.save("last")

    def _max_steps_reached(self) -> bool:
        return self.settings.max_steps is not None and self.prog.step >= self.settings.max_steps

    def _checkpoint_due(self) -> bool:
        every = self.settings.checkpoint_every
        return every is not None and self.prog.step % every == 0

    def _progress_bar(self, epoch: int) -> tqdm:
        bar = tqdm(
            total=len(self.stream),
            desc=f"epoch {epoch + 1}/{self.settings.max_epochs}",
            disable=not self.settings.progress,
            leave=False,
            dynamic_ncols=True,
        )
        bar.update(self.stream.position)  # resumed mid-epoch
        return bar

    # ---------------------------------------------------------------- one optimizer step
    def train_step(self, group: Group | list[MicroBatch]) -> bool:
        """One optimizer step: ``forward_backward`` of each micro-batch of ``group``, then
        ``optimizer_step``. Each micro-batch's loss is divided by ``len(group)``, so the step
        follows the mean loss over the micro-batches it has (an epoch's short last group
        included). Returns whether the step was taken: with ``on_nonfinite=skip`` always (a step
        whose values were non-finite is masked on the device, counted and logged later by
        ``_account_skips``); otherwise whether its update was applied."""
        step, n = self.prog.step, len(group)
        diagnose = self._grad_diagnostics_due()
        self.comm.start_step()
        if self.norm_stats:  # a dropped step puts these back (see _drop_update)
            _copy(self._norm_stats_before, self.norm_stats)
        if self.settings.on_nonfinite == "skip":  # and the weighting method's state, likewise
            self._weighting_before = {k: b.clone() for k, b in self.weighting.named_buffers() if b.dtype != torch.uint8}
        for i, micro in enumerate(group):
            self.forward_backward(micro, n, diagnose=diagnose and i == 0, last=i == n - 1)
        self.optimizer_step()
        return self.prog.step != step

    def forward_backward(self, micro: MicroBatch, divisor: int, diagnose: bool = False, last: bool = True) -> None:
        """Forward one micro-batch, check its [T] losses, and let the weighting method
        back-propagate them (gradients divided by ``divisor``, the micro-batches of the step,
        added to ``.grad``); the losses and weights add to the logging sums. ``diagnose``: log
        the gradient diagnostics of these losses first. ``last``: the step's last micro-batch
        (with several processes and DistributedDataParallel, the one whose backward synchronises)."""
        with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
            self._forward_backward(micro, divisor, diagnose)

    def _forward_backward(self, micro: MicroBatch, divisor: int, diagnose: bool) -> None:
        inputs, targets, masks = to_device(micro.batch, self.device, self.settings.channels_last)
        present = self._present_mask(micro.datasets, targets)
        rep = None
        with self.autocast():
            if self.ddp is not None:  # loss-based methods: DDP's forward, its hooks sync the gradients
                preds = self.ddp(inputs)
            else:
                rep = self.model.encode(inputs)
                preds = self.model.decode(rep)
            local = self.compute_losses(preds, targets, masks)  # [T]; 0 for absent tasks
        # several processes: the value of the global batch's losses, the gradient of this share
        losses = self.comm.global_losses(local, self._label_counts(masks)) if self.comm.active else local
        self.prog.micro += 1
        finite = self._check_losses(losses)
        if finite is False:  # on_nonfinite=stop ends the run in the check; nothing else gets here
            return
        if diagnose:
            self.log_grad_diagnostics(losses, present)
        amp = 1.0
        if self.scaler.is_enabled() and "grads" in self.weighting.requires:  # a host read: gradient methods only
            amp = self.scaler.get_scale()
        ctx = BackwardContext(
            model=self.model,
            backward=functools.partial(self._backward, divisor=divisor),
            step=self.prog.step,
            present=present,
            rep=rep,
            grad_scale=amp / divisor,
            skip_step=self._skip_step,
            skip_if=self._skip_if,
            present_rows=self._present_rows[micro.datasets],
            amp_scale=amp,
            comm=self.comm if self.comm.active else None,
        )
        w = self.weighting.backward(losses, ctx)
        if finite is None:  # checked on the device: a skipped step adds nothing to the logged sums
            ok = (~self._bad).float()
            self.loss_acc += torch.where(self._bad, 0.0, losses.detach().float() * present)
            self.weight_acc += torch.where(self._bad, 0.0, w.float() * present)
            self.count_acc += present * ok
        else:
            self.loss_acc += losses.detach().float() * present
            self.weight_acc += w.float() * present
            self.count_acc += present
        self.samples += micro.n_samples

    def _backward(self, total: torch.Tensor, inputs=None, *, divisor: int) -> None:
        """``ctx.backward``: AMP-scale ``total``, divide it by the step's micro-batches, and
        back-propagate it (into ``inputs`` only, when given)."""
        self.scaler.scale(total / divisor).backward(inputs=inputs)

    def _label_counts(self, masks: dict) -> torch.Tensor:
        """[T] the labelled samples of each task in this micro-batch (0 for absent tasks)."""
        zero = torch.zeros((), device=self.device)
        return torch.stack([masks[t.target].sum().float() if t.target in masks else zero for t in self.tasks])

    def _present_mask(self, datasets: tuple[str, ...], targets: dict) -> torch.Tensor:
        """[T] 1.0 for the tasks that have a batch this step (cached per dataset combination)."""
        m = self._present.get(datasets)
        if m is None:
            flags = self.compute_losses.present(targets)
            m = torch.tensor(flags, dtype=torch.float32, device=self.device)
            self._present[datasets] = m
            self._present_rows[datasets] = [i for i, v in enumerate(flags) if v]
        return m

    def _check_losses(self, losses: torch.Tensor) -> bool | None:
        """The [T] losses' non-finite check. ``on_nonfinite=skip`` decides on the device: the
        step's flags are set (no host read) and None is returned; the update is then masked
        (``_masked_step``), and the weighting method's state and the normalization statistics are
        restored at the step's end. ``stop`` reads the losses at once and stops on a non-finite
        one (True otherwise); ``ignore`` does not look (True)."""
        mode = self.settings.on_nonfinite
        if mode == "ignore":
            return True
        finite = torch.isfinite(losses.detach())
        if mode == "skip":
            self._bad_tasks |= ~finite
            self._bad |= ~finite.all()
            return None
        flags = finite.tolist()  # stop: the host read of every micro-batch
        if all(flags):
            return True
        bad = [n for n, ok in zip(self.names, flags) if not ok]
        self._skip_step(f"non-finite loss of task(s) {', '.join(bad)}")
        return False

    def _skip_step(self, why: str) -> None:
        """Something in this step is non-finite: stop (on_nonfinite=stop) or drop the update."""
        if self.settings.on_nonfinite == "stop":
            raise TrainingError(
                f"step {self.prog.step + 1} (epoch {self.prog.epoch + 1}): {why}; stopped "
                f"(trainer.on_nonfinite=stop). {self._checkpoints_note()}"
            )
        if why not in self._skip_why:
            self._skip_why.append(why)
        self._skip = True

    def _skip_if(self, cond: torch.Tensor, why: str, labels: list[str] | None = None) -> bool | None:
        """``ctx.skip_if``: skip the step where ``cond`` is set. ``on_nonfinite=skip``: a device
        flag (None; the step is masked and ``_account_skips`` reads and names it later); otherwise
        ``cond`` is read now (whether the step is skipped)."""
        if self.settings.on_nonfinite != "skip":
            hits = cond.reshape(-1).tolist()
            if not any(hits):
                return False
            named = ", ".join(label for label, hit in zip(labels or [], hits) if hit)
            self._skip_step(f"{why} {named}" if named else why)
            return True
        flags = cond.detach().reshape(-1).bool()
        self._bad |= flags.any()
        self._flags.append((why, labels, flags))
        return None

    def optimizer_step(self) -> None:
        """Unscale and clip, check the gradient norm, then the optimizer and scheduler step (or
        drop the update when something in the step was non-finite)."""
        if self.settings.on_nonfinite == "skip":
            self._deferred_step()
            return
        clip = self.settings.gradient_clip_val
        norm = None
        if self.comm.active and self.ddp is None and not self._skip:  # (DDP synced in its backward)
            self.comm.sync_grads(self.params)
        if clip is not None and not self._skip:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if not self._skip and self.settings.on_nonfinite != "ignore" and not self.scaler.is_enabled():
            # (with fp16 the GradScaler finds and skips non-finite gradients itself)
            if norm is None:
                norm = _total_norm([p.grad for p in self.params if p.grad is not None])
            if norm is not None and not bool(torch.isfinite(norm)):
                self._skip_step("non-finite gradient (every task's loss was finite)")
        if self._skip:
            self._drop_update()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        self.prog.step += 1
        self.weighting.on_step_end(self.prog.step)

    def _deferred_step(self) -> None:
        """``on_nonfinite=skip``: the step with its skip decided on the device. The gradient norm's
        check joins the losses' flag; the update is masked by it (``_masked_step``: the fused
        optimizers' found-inf path, as GradScaler uses it, without a host read); then the
        normalization statistics and the weighting method's state are put back where the flag is
        set, and the step is recorded for ``_account_skips``. A skipped step still counts as a
        step (the schedule moves on, as with GradScaler) and is counted in ``skipped_steps``."""
        if self._skip:  # something the host already knows (the gradient engine said so)
            self._bad.fill_(True)
        if self.comm.active and self.ddp is None:  # (DDP synced in its backward)
            self.comm.sync_grads(self.params)
        clip = self.settings.gradient_clip_val
        norm = None
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        if not self.scaler.is_enabled():  # (with fp16 the GradScaler finds non-finite gradients itself)
            if norm is None:
                norm = _total_norm([p.grad for p in self.params if p.grad is not None])
            if norm is not None:
                grad_bad = ~torch.isfinite(norm)
                self._bad_grad.copy_(grad_bad & ~self._bad)
                self._bad |= grad_bad
        self._masked_step()
        if self.ema is not None:
            self.ema.update(skipped=self._bad)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        self.prog.step += 1
        if self.norm_stats:
            for now, kept in zip(self.norm_stats, self._norm_stats_before):
                now.copy_(torch.where(self._bad, kept, now))
        for name, now in self.weighting.named_buffers():
            before = self._weighting_before.get(name)
            if before is not None and before.shape == now.shape and now.dtype != torch.uint8:
                now.copy_(torch.where(self._bad, before, now))
        row = torch.cat(
            [self._bad[None].float(), self._bad_grad[None].float(), self._bad_tasks.float()]
            + [f.float() for _, _, f in self._flags]
        )
        said = [(why, labels) for why, labels, _ in self._flags]
        self._pending.append((self.prog.step, row, "; ".join(self._skip_why), said))
        self._skip, self._skip_why, self._flags = False, [], []
        self._bad.zero_()
        self._bad_grad.zero_()
        self._bad_tasks.zero_()
        self.weighting.on_step_end(self.prog.step)

    def _masked_step(self) -> None:
        """The optimizer (and GradScaler) step, skipped where ``_bad`` is set: fused optimizers
        take the flag as ``found_inf`` and skip on the device; others read it once (one host read
        per step)."""
        opt = self.optimizer
        if self.scaler.is_enabled():
            if self._skip:  # known on the host: GradScaler would not see it in the gradients
                self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
                return
            self.scaler.step(opt)
            self.scaler.update()
            return
        if getattr(opt, "_step_supports_amp_scaling", False) and any(g.get("fused") for g in opt.param_groups):
            opt.grad_scale, opt.found_inf = None, self._bad.float()  # type: ignore[attr-defined]
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf  # type: ignore[attr-defined]
        elif not bool(self._bad):  # the one host read of a non-fused optimizer's step
            opt.step()

    def _account_skips(self) -> None:
        """Read the flags of the steps since the last call (one host read), count the skipped steps,
        log each, and stop the run past ``trainer.max_skipped_steps``. Called at every log, at
        every epoch end and before every checkpoint."""
        if not self._pending:
            return
        rows = torch.cat([r for _, r, _, _ in self._pending]).tolist()  # (one host read)
        pending, self._pending = self._pending, []
        limit = self.settings.max_skipped_steps
        n, at = len(self.names), 0
        for step, r, host_why, said in pending:
            row, at = rows[at : at + r.numel()], at + r.numel()
            if row[0] < 0.5:
                continue
            self.skipped += 1
            why = []
            if any(b > 0.5 for b in row[2 : 2 + n]):
                why.append(f"non-finite loss of task(s) {', '.join(t for t, b in zip(self.names, row[2:]) if b > 0.5)}")
            if row[1] > 0.5:
                why.append("non-finite gradient (every task's loss was finite)")
            k = 2 + n
            for what, labels in said:  # the gradient engine's device flags (ctx.skip_if)
                hits, k = row[k : k + len(labels or [None])], k + len(labels or [None])
                named = ", ".join(label for label, hit in zip(labels or [], hits) if hit > 0.5)
                text = f"{what} {named}" if named else what
                if any(h > 0.5 for h in hits) and text not in why:
                    why.append(text)
            if host_why:
                why.append(host_why)
            text = "; ".join(why) or "non-finite values"
            if limit is not None and self.skipped > limit:
                raise TrainingError(
                    f"step {step} (epoch {self.prog.epoch + 1}): {text}; {self.skipped} steps skipped, more than "
                    f"trainer.max_skipped_steps={limit}. {self._checkpoints_note()}; lower optimizer.lr, set "
                    "trainer.gradient_clip_val, or check the data of those tasks"
                )
            log.warning("step %d skipped (%d so far): %s", step, self.skipped, text)

    def _drop_update(self) -> None:
        """The step changes nothing: no update, its gradients dropped, the normalization layers'
        running statistics as they were before its first forward."""
        self._skip = False
        self.optimizer.zero_grad(set_to_none=True)
        if self.norm_stats:
            _copy(self.norm_stats, self._norm_stats_before)
        if self.scaler.is_enabled():  # as GradScaler does on an overflow: lower the scale
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        self.skipped += 1
        why = "; ".join(self._skip_why) or "non-finite values"
        self._skip_why = []
        limit = self.settings.max_skipped_steps
        if limit is not None and self.skipped > limit:
            raise TrainingError(
                f"step {self.prog.step + 1} (epoch {self.prog.epoch + 1}): {why}; {self.skipped} "
                f"steps skipped, more than trainer.max_skipped_steps={limit}. {self._checkpoints_note()}; "
                "lower optimizer.lr, set trainer.gradient_clip_val, or check the data of those tasks"
            )
        log.warning("step %d skipped (%d so far): %s", self.prog.step + 1, self.skipped, why)

    # ---------------------------------------------------------------- logging
    def _grad_diagnostics_due(self) -> bool:
        every = self.log_settings.grad_diagnostics_every
        return every is not None and (self.prog.step + 1) % every == 0

    def log_grad_diagnostics(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """Norms of the task gradients of the shared parameters, their pairwise cosines, and the
        share of conflicting pairs (negative cosine), as one ``split: grad`` record."""
        from ..weighting.engine import jacobian

        rows = [i for i, v in enumerate(present.tolist()) if v > 0]
        shared: list[torch.Tensor] = [p for p in self.model.shared_parameters() if p.requires_grad]
        if not shared or not rows:
            return
        G = self.comm.all_reduce(jacobian(losses, shared, rows).float(), "avg", "diagnostics")
        norms = G.norm(dim=1)
        cos = (G @ G.T) / (norms[:, None] * norms[None, :]).clamp_min(1e-12)
        names = [self.names[i] for i in rows]
        iu = torch.triu_indices(len(rows), len(rows), 1)
        pair = cos[iu[0], iu[1]]
        rec = {"split": "grad", "epoch": self.prog.epoch + 1, "step": self.prog.step + 1}
        rec |= {f"grad_norm/{n}": v for n, v in zip(names, norms.tolist())}
        if pair.numel():
            rec |= {
                "grad_cos_mean": float(pair.mean()),
                "grad_cos_min": float(pair.min()),
                "grad_conflict_share": float((pair < 0).float().mean()),
            }
            if len(rows) <= 8:  # the full matrix only for a few tasks (T(T-1)/2 entries)
                rec |= {f"grad_cos/{names[a]}~{names[b]}": float(cos[a, b]) for a, b in zip(*iu.tolist())}
        self.metrics.log(rec)

    def log_train(self, epoch: int, bar) -> None:
        self._account_skips()
        # the one host sync per logging interval: losses and weights in one transfer
        # a task without a batch in the interval (another dataset fed those steps) logs NaN
        lv, wv, cv = torch.stack(
            [self.loss_acc / self.count_acc, self.weight_acc / self.count_acc, self.count_acc]
        ).tolist()
        if not any(cv):  # every step of the interval was skipped: nothing to average, no record
            return
        rec = {"split": "train", "epoch": epoch + 1, "step": self.prog.step}
        rec |= {f"loss/{n}": v for n, v in zip(self.names, lv)}
        rec |= {f"weight/{n}": v for n, v in zip(self.names, wv)}
        rec |= {
            "loss": sum(a * b for a, b in zip(lv, wv) if not (math.isnan(a) or math.isnan(b))),
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_s": self.samples * self.comm.world / (time.perf_counter() - self.t_log),
        }
        self.metrics.log(rec)
        shown = self.names if len(self.names) <= SHOWN_TASKS else self.names[: SHOWN_TASKS // 2]
        losses = {n: f"{rec[f'loss/{n}']:.3g}" for n in shown}
        if len(shown) < len(self.names):
            losses["loss"] = f"{rec['loss']:.3g}"  # the weighted total stands for the tasks not shown
        bar.set_postfix(losses | {"samples/s": f"{rec['samples_per_s']:.0f}"})
        self.loss_acc.zero_()
        self.weight_acc.zero_()
        self.count_acc.zero_()
        self.samples, self.t_log = 0, time.perf_counter()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, loaders: dict, limit: int | None) -> dict:
        """Metrics of every task on its own dataset's loader, in task order."""
        res: dict[str, dict[str, float]] = {}
        for d, loader in loaders.items():
            res |= evaluate(
                self.model,
                loader,
                self.tasks_of[d],
                self.device,
                limit,
                self.autocast,
                self.comm,
                channels_last=self.settings.channels_last,
            )
        return {t.name: res[t.name] for t in self.tasks}

    def validate(self) -> None:
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            res = self.evaluate(self.val_loaders, self.settings.limit_val_batches)
        score, improved = self.selector.update(res, self.prog.epoch)
        if self.on_metric:
            assert self.scheduler is not None
            self.scheduler.step(-math.inf if math.isnan(score) else score)
        if self.early.update(score) and self.prog.epoch < self.settings.max_epochs:
            self.early.stopped_at = self.prog.epoch
            log.info(
                "early stopping after epoch %d: the monitor (%s) has not risen by more than %g in %d evaluations",
                self.prog.epoch,
                self.settings.monitor,
                self.settings.early_stopping_min_delta,
                self.early.stale,
            )
        rec = {"split": "val", "epoch": self.prog.epoch, "step": self.prog.step, "score": score}
        rec |= {f"{t}/{m}": v for t, r in res.items() for m, v in r.items()}
        self.metrics.log(rec)
        self.metrics.write_csv()
        self.history.append(rec)
        parts = [f"{t.name}/{t.primary_metric}={res[t.name][t.primary_metric]:.4g}" for t in self.tasks]
        if len(parts) > SHOWN_TASKS:  # 139 School tasks: a line of 3,000 characters per epoch
            parts = parts[: SHOWN_TASKS // 2] + [f"... and {len(parts) - SHOWN_TASKS // 2} more tasks (metrics.jsonl)"]
        short = "  ".join(parts)
        log.info("epoch %d  val %s  score %.4f%s", self.prog.epoch, short, score, "  (best)" if improved else "")
        if improved:
            self.save("best")
        if self.settings.save_top_k:
            ranks = self._rng_ranks()  # every process takes part; rank 0 writes
            if self.comm.is_main:
                self.top_k.update(score, self.prog.epoch, self.prog.step, lambda: self.state("top", ranks))

    # ---------------------------------------------------------------- checkpoints and signals
    def save(self, kind: str, path: Path | None = None) -> Path:
        """Write a checkpoint (never one with non-finite weights over a good one)."""
        path = path or self.ckpt_dir / f"{kind}.pt"
        check_workers()  # nothing is written after a data loading worker died
        self._account_skips()  # the skipped-step count in the checkpoint is read first
        ranks = self._rng_ranks()  # every process's random state (a collective with several)

        def write() -> None:
            state = self.state(kind, ranks)
            if not all_finite(state["model"]):
                kept = f"{path} was not overwritten" if path.is_file() else f"{path} was not written"
                raise TrainingError(
                    f"the weights are non-finite at step {self.prog.step}; {kept}. {self._checkpoints_note()}. "
                    "Lower optimizer.lr or set trainer.gradient_clip_val"
                )
            save_checkpoint(state, path)

        self.comm.on_main(write)  # rank 0 writes; its error, if any, is raised on every process
        if path.parent == self.ckpt_dir:
            self._written[path.stem] = self.prog.step
        return path

    def _rng_ranks(self) -> list[dict] | None:
        """Every process's random state, for the checkpoint rank 0 writes (None in one process)."""
        return self.comm.all_gather_object(rng_state()) if self.comm.active else None

    def _checkpoints_note(self) -> str:
        """Which checkpoints of the run exist (the only ones a message may point to): last.pt
        and best.pt, with the step each was written at when this process wrote it."""
        found = []
        for kind, what in (("last", "the last finite weights written"), ("best", "the best weights so far")):
            if (self.ckpt_dir / f"{kind}.pt").is_file():
                at = f" (step {self._written[kind]})" if kind in self._written else ""
                found.append(f"{kind}.pt{at} holds {what}")
        if not found:
            return f"No checkpoint was written yet (nothing in {self.ckpt_dir})"
        return f"In {self.ckpt_dir}: " + "; ".join(found)

    def state(self, kind: str, rng_ranks: list[dict] | None = None) -> dict:
        """Everything a checkpoint holds: tensors and plain containers only (weights_only loads).
        With several processes, ``rng_ranks`` holds each one's random state and ``world`` their
        number."""
        extra = {"world": self.comm.world, "rng_ranks": rng_ranks} if rng_ranks is not None else {}
        return extra | {
            "kind": kind,
            "model": self.ema.averaged_state() if self.ema is not None else self.model.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "early_stopping": self.early.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "epoch": self.prog.epoch,
            "step": self.prog.step,
            "progress": dict(vars(self.prog)),
            "selector": self.selector.state_dict(),
            "history": [dict(h) for h in self.history],
            "top_k": self.top_k.state_dict(),
            "stream": self.stream.state_dict(),
            "accumulators": {
                "loss": self.loss_acc.clone(),
                "weight": self.weight_acc.clone(),
                "count": self.count_acc.clone(),
                "samples": self.samples,
            },
            "skipped": self.skipped,
            "metrics_records": len(self.metrics),
            "rng": rng_state(),
            "task_names": self.names,
            "config_yaml": self._config_yaml(),
        }

    def _config_yaml(self) -> str:
        """The run's config as YAML, for checkpoints: made again only when the config changed
        (compared as JSON text, milliseconds): OmegaConf's YAML of a large config (139 School tasks)
        takes about 0.4 s, and every checkpoint of a short run paid it."""
        key = json.dumps(self.plan.cfg, sort_keys=True, default=str)
        if getattr(self, "_yaml_of", (None, ""))[0] != key:
            self._yaml_of = (key, OmegaConf.to_yaml(OmegaConf.create(self.plan.cfg)))
        return self._yaml_of[1]

    @contextlib.contextmanager
    def _signals(self):
        """SIGTERM / SIGINT: finish the current step, write last.pt, stop (RunInterrupted).
        A second SIGINT stops at once (KeyboardInterrupt). A signal sent to the whole process
        group reaches the DataLoader workers too; they leave it to this process
        (``batches.Loader``), so it is answered once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        owner = os.getpid()

        def on_signal(signum, frame):
            if os.getpid() != owner:  # a forked DataLoader worker (see batches.Loader): the main process answers
                return
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning(
                "%s received: stopping after this step and writing a checkpoint (Ctrl-C again to stop at once)",
                signal.Signals(signum).name,
            )

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _stop_requested(self) -> bool:
        """A stop signal reached this process, or (with several) any process: every process stops
        after the same step (one tiny all-reduce per step)."""
        if not self.comm.active:
            return self._stop_signal is not None
        if self.comm.any(self._stop_signal is not None, self.device, "signals"):
            if self._stop_signal is None:
                self._stop_signal = signal.SIGTERM  # another process got it
            return True
        return False

    def _stop_if_signalled(self) -> None:
        if not self._stop_requested():
            return
        path = self.save("last")
        self.metrics.close()
        raise RunInterrupted(signal.Signals(self._stop_signal or signal.SIGTERM).name, self.prog.step, str(path))

    # ---------------------------------------------------------------- end of run
    def finish(self) -> dict:
        self._account_skips()

        def best_weights() -> dict:
            state = load_checkpoint(self.ckpt_dir / "best.pt", map_location="cpu")
            return {"model": state["model"], "step": state["step"]}

        best = self.comm.on_main(best_weights)  # rank 0 reads best.pt; every process gets its weights
        self.model.load_state_dict(best["model"])
        test = self.evaluate(self.test_loaders, self.settings.limit_test_batches)
        self.metrics.log(
            {"split": "test", "epoch": self.selector.best_epoch, "step": best["step"]}
            | {f"{t}/{m}": v for t, r in test.items() for m, v in r.items()}
        )
        self.metrics.close()
        summary = self.summary(test)
        if self.comm.is_main:
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def summary(self, test: dict) -> dict:
        best_val = next(h for h in self.history if h["epoch"] == self.selector.best_epoch)
        peak, peak_kind = peak_memory_mb(self.device)
        out = {
            "run_dir": str(self.run_dir),
            "objective": {"monitor": self.settings.monitor, "value": self.selector.best_score, "direction": "maximize"},
            "selected_epoch": self.selector.best_epoch,
            "epochs": self.prog.epoch,
            "steps": self.prog.step,
            "skipped_steps": self.skipped,
            "stopped_early": self.early.stopped_at,
            "ema": self.settings.ema,
            "tasks": {
                t.name: {
                    "kind": t.kind.name,
                    "role": t.role,
                    "weight": t.weight,
                    "primary_metric": t.primary_metric,
                    "directions": {m: t.direction(m) for m in t.metric_names},
                }
                for t in self.tasks
            },
            "test": test,
            "val_selected": _nest(best_val, self.tasks),
            "val_final": _nest(self.history[-1], self.tasks),
            "time_per_step_s": self.prog.train_time / max(1, self.prog.step),
            "train_time_s": self.prog.train_time,
            "wall_time_s": time.perf_counter() - self.t_start,
            "peak_memory_mb": peak,
            "peak_memory_kind": peak_kind,
            "device": str(self.device),
            "parameters": self.model.parameter_groups(),
            "environment": environment(),
        }
        if self.baselines is not None:  # Δm of the primary tasks against the single-task baselines
            out["delta_m"] = delta_m_report(
                test, out["val_selected"], self.baselines, self.selector.directions, self.plan.cfg["baseline_dir"]
            )
        return out


def norm_statistics(model: torch.nn.Module) -> list[torch.Tensor]:
    """The buffers that a training forward of ``model`` updates in place: the running statistics
    of its BatchNorm (and InstanceNorm with ``track_running_stats``) layers."""
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats:
            out += [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    return out


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for all i (one fused call where torch has it; no host sync)."""
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(dst, src)
    else:
        for d, s_ in zip(dst, src):
            d.copy_(s_)


def _counted_allreduce(comm, bucket):
    """DistributedDataParallel's gradient all-reduce (its default hook: the mean over the
    processes), with the bytes counted in ``comm.bytes`` like every other collective of the run."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    buf = bucket.buffer()
    comm.bytes["parameter gradients"] += buf.numel() * buf.element_size()
    return allreduce_hook(None, bucket)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor | None:
    """The global 2-norm of ``grads`` (one fused kernel per device where torch has it)."""
    if not grads:
        return None
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm() for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]))


def _nest(rec: dict, tasks) -> dict:
    return {t.name: {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith(f"{t.name}/")} for t in tasks}


def objective_value(summary: dict) -> float:
    v = summary["objective"]["value"]
    return float("nan") if v is None or (isinstance(v, float) and math.isinf(v)) else float(v)


def compile_model(model: torch.nn.Module, settings) -> None:
    """``trainer.compile``: the model's ``encode`` and ``decode`` compiled in place (instance
    attributes over the methods), so ``forward``, DistributedDataParallel and the gradient
    methods that read ``encode``'s output all run the compiled code, while the parameters and
    their names stay the model's own: checkpoints of compiled and eager runs are the same files.
    The losses and the weighting method stay eager. ``compile_mode`` is inductor's."""
    if not settings.compile:
        return
    kw: dict = {"backend": settings.compile_backend}
    if settings.compile_backend == "inductor" and settings.compile_mode != "default":
        kw["mode"] = settings.compile_mode
    m = cast(Any, model)
    m.encode = torch.compile(m.encode, **kw)
    m.decode = torch.compile(m.decode, **kw)


def steps_on_metric(scheduler) -> bool:
    """Whether ``scheduler.step`` takes the value of a metric (torch's ReduceLROnPlateau and its kind)."""
    import inspect

    return "metrics" in inspect.signature(scheduler.step).parameters
