"""``mtl-eval``: metrics of a finished run on any split, or on other data with the same tasks.

    mtl-eval <run dir> [checkpoint=best|last|<path>] [split=test|val|train] [limit=N]
             [batch_size=N] [<data overrides>...]

Each dataset the tasks read is evaluated as ``Trainer.evaluate`` does it (same loaders, batch
size, autocast and metric code), on the whole split unless ``limit`` batches are given. The table
is printed, and ``<run dir>/eval/<split>-<checkpoint>[-<hash of overrides>].json`` is written.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from ..errors import ConfigError, Problem, UserError
from .summary import _fmt

USAGE = """\
usage: mtl-eval <run dir> [checkpoint=best|last|<file.pt>] [split=test|val|train] [limit=N]
                [batch_size=N] [<config overrides>...]

Evaluates a finished mtl-train run: the metrics of every task on a split of its data, or on
other data with the same tasks (data overrides). Prints a table and writes
<run dir>/eval/<split>-<checkpoint>[-<hash of the overrides>].json.

arguments:
  <run dir>           the run's folder (holds config.yaml and checkpoints/)
  checkpoint=NAME     best (default: the selected epoch), last, or the path of a .pt file
                      (relative paths also resolve against <run dir>/checkpoints/)
  split=NAME          test (default), val or train
  limit=N             only the first N batches of each dataset (default: the whole split;
                      the run's own test used trainer.limit_test_batches, if it was set)
  batch_size=N        evaluation batch size (default: the run's trainer.eval_batch_size,
                      else 2 x trainer.batch_size)
  <config overrides>  data.*, datasets.*, device, trainer.precision, trainer.num_workers,
                      allowed_targets=[...] (the run's own allowed_targets is never used)

examples:
  mtl-eval outputs/my_run                          # test metrics at best.pt
  mtl-eval outputs/my_run checkpoint=last split=val
  mtl-eval outputs/my_run data.seed=5              # other generated shapes, same tasks
  mtl-eval outputs/tab data.path=new.csv data.test_fraction=1.0   # another CSV file

exit codes: 0 done; 2 a problem with the arguments, the run directory, its config or data."""

SPLITS = ("test", "val", "train")


def split_arguments(argv: list[str], options: dict, usage: str, tool: str, repeated: tuple[str, ...] = ()):
    """(run dir, {option: value}, config overrides) of ``<run dir> key=value...``; ``options``
    holds the tool's own keys with their defaults; an option in ``repeated`` collects a list of
    every value given. ConfigError names each bad argument."""
    from ..runs import OVERRIDABLE, overridable  # (torch is imported only when a command runs)

    problems, run_dir, opts, overrides = [], None, dict(options), []
    for k in repeated:
        opts[k] = []
    for a in argv:
        key = a.split("=", 1)[0]
        if "=" not in a:
            if a.startswith("-"):
                problems.append(Problem(a, "unknown flag", a, allowed="--help", fix=f"see {tool} --help"))
            elif run_dir is None:
                run_dir = a
            else:
                problems.append(
                    Problem(
                        a,
                        "a second argument without key=: only the run directory is given so",
                        a,
                        fix="give one run directory, then key=value arguments"
                        + (f" (inputs as input={a})" if "input" in repeated else "")
                        + f"; see {tool} --help",
                    )
                )
        elif key in repeated:
            opts[key].append(a.split("=", 1)[1])
        elif key in options:
            opts[key] = a.split("=", 1)[1]
        elif "." not in key and not overridable(key.lstrip("+")):  # dotted keys: config overrides
            names = [*repeated, *options]
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            problems.append(
                Problem(
                    key,
                    f"unknown argument of {tool}",
                    a,
                    allowed=", ".join(names)
                    + ", or config overrides of "
                    + ", ".join(k + "*" if k.endswith(".") else k for k in OVERRIDABLE),
                    fix=f"did you mean {close[0]}=...?" if close else f"see {tool} --help",
                )
            )
        else:
            overrides.append(a)
    if run_dir is None:
        problems.append(
            Problem(
                "<run dir>", "missing", fix=f"name the run's folder first: {usage.splitlines()[0][len('usage: ') :]}"
            )
        )
    if problems:
        raise ConfigError(problems)
    return Path(run_dir), opts, overrides


def positive_int(key: str, text: str | int | None) -> int | None:
    """``text`` as an integer >= 1 (None stays None), else ConfigError naming ``key``."""
    if text in (None, "", "null", "none"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(
            [Problem(key, "expected an integer >= 1", text, allowed="an integer >= 1", fix=f"e.g. {key}=10")]
        )
    return n


def evaluate_run(run, split: str = "test", limit: int | None = None, batch_size: int | None = None) -> dict:
    """{"metrics": {task: {metric: value}}, "samples": {dataset: n}} of a loaded run on ``split``
    of each dataset its tasks read, computed as Trainer.evaluate does."""
    from ..data.base import PRIMARY, with_prefix
    from ..train import distributed
    from ..train.batches import make_loader
    from ..train.evaluate import evaluate

    comm = distributed.current()  # several processes (torchrun): each evaluates its shard
    cfg, t = run.plan.cfg, run.plan.cfg["trainer"]
    ebs = batch_size or t["eval_batch_size"] or 2 * t["batch_size"]
    res, samples = {}, {}
    for d in run.plan.used_datasets():
        ds = run.plan.sources[d].load()[split]
        ds = with_prefix(ds, "" if d == PRIMARY else f"{d}/")
        samples[d] = len(ds)
        loader = make_loader(ds, ebs, False, cfg["seed"], t["num_workers"], run.device, comm.rank, comm.world)
        tasks = [x for x in run.tasks if x.dataset == d]
        res |= evaluate(run.model, loader, tasks, run.device, limit, run.autocast, comm)
    run.model.eval()  # evaluate() leaves the model in train mode
    return {"metrics": {x.name: res[x.name] for x in run.tasks}, "samples": samples}


def format_table(run, metrics: dict, split: str) -> str:
    """The metrics as a table in the style of the end-of-run summary."""
    lines = [f"{'task':<16}{'kind':<18}{'metric':<18}{split:>10}"]
    for x in run.tasks:
        for i, m in enumerate(x.metric_names):
            arrow = "↑" if x.direction(m) == "higher" else "↓"
            star = "*" if m == x.primary_metric else " "
            first = (x.name, x.kind.name) if i == 0 else ("", "")
            lines.append(f"{first[0]:<16}{first[1]:<18}{f'{m} {arrow}{star}':<18}{_fmt(metrics[x.name].get(m)):>10}")
    return "\n".join(lines)


def eval_options(split: str, limit: str | int | None, batch_size: str | int | None) -> tuple[int | None, int | None]:
    """(limit, batch_size) as integers (None: not given) once ``split`` is a split and both are
    integers >= 1; else ConfigError naming the argument."""
    if split not in SPLITS:
        raise ConfigError([Problem("split", "unknown split", split, allowed=", ".join(SPLITS), fix="e.g. split=val")])
    return positive_int("limit", limit), positive_int("batch_size", batch_size)


def evaluation_record(run, result: dict, split: str, limit: int | None) -> tuple[dict, Path]:
    """What mtl-eval writes for ``result`` (of :func:`evaluate_run`), and where:
    ``<run dir>/eval/<split>-<checkpoint>[-<hash of the overrides and limit>].json``."""
    from ..runs import short_hash

    keyed = list(run.overrides) + ([f"limit={limit}"] if limit else [])
    name = f"{split}-{run.checkpoint_name}" + (f"-{short_hash(keyed)}" if keyed else "")
    record = {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "epoch": run.epoch,
        "split": split,
        "overrides": run.overrides,
        "limit": limit,
        "samples": result["samples"],
        "metrics": result["metrics"],
    }
    return record, run.run_dir / "eval" / f"{name}.json"


def save_evaluation(record: dict, out: Path) -> None:
    from ..train.rundir import write_json, writing

    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)


def run_eval(argv: list[str]) -> Path:
    from ..runs import load_run

    run_dir, opts, overrides = split_arguments(
        argv, {"checkpoint": "best", "split": "test", "limit": None, "batch_size": None}, USAGE, "mtl-eval"
    )
    limit, batch_size = eval_options(opts["split"], opts["limit"], opts["batch_size"])
    run = load_run(run_dir, opts["checkpoint"], overrides)
    result = evaluate_run(run, opts["split"], limit, batch_size)
    record, out = evaluation_record(run, result, opts["split"], limit)
    if not _is_main():  # several processes: rank 0 writes and reports
        return out
    save_evaluation(record, out)
    n = (
        ", ".join(f"{d} {k}" for d, k in result["samples"].items())
        if len(result["samples"]) > 1
        else str(next(iter(result["samples"].values())))
    )
    print(
        f"Run directory: {run.run_dir}\nCheckpoint {run.checkpoint_name} (epoch {run.epoch}, step {run.step}), split "
        f"{opts['split']} ({n} samples{f', first {limit} batches' if limit else ''})"
        + (f", overrides: {' '.join(run.overrides)}" if run.overrides else "")
        + "\n"
    )
    print(format_table(run, result["metrics"], opts["split"]))
    print(f"\n* primary metric   written to {out}", flush=True)
    return out


def _is_main() -> bool:
    from ..train import distributed

    return distributed.current().is_main


def join_processes() -> None:
    """Under torchrun (or Slurm), join the process group: evaluation and prediction shard their
    inputs over the processes and rank 0 writes."""
    from ..train import distributed

    if distributed.environment() is not None:
        distributed.setup("auto")


def print_usage(usage: str, argv: list[str]) -> None:
    """``--help``: the usage on stdout (exit 0); no arguments at all: the same, exit 2."""
    try:
        print(usage, flush=True)
    except BrokenPipeError:  # `mtl-eval --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if not argv:
        raise SystemExit(2)


def run_tool(run, usage: str, argv: list[str] | None) -> None:
    """Shared by mtl-eval and mtl-predict: usage on -h / no arguments; a UserError becomes its
    message and exit code (no traceback unless MTL_DEBUG=1)."""
    from .train import debugging

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print_usage(usage, argv)
        return
    try:
        join_processes()
        run(argv)
    except UserError as e:
        if debugging():
            raise
        if _is_main():
            sys.stderr.write(e.render() + "\n")
        raise SystemExit(e.exit_code) from None


def main(argv: list[str] | None = None) -> None:
    from ..train.distributed import leaving_cleanly

    with leaving_cleanly():  # a process of several (torchrun) ends with its status, past finalisation
        run_tool(run_eval, USAGE, argv)


if __name__ == "__main__":
    main()
