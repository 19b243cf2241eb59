"""``mtl-train``: Hydra entry point. Checks the command line and the composed config first, so
that mistakes end with a clear message and exit code 2 (no traceback unless MTL_DEBUG=1), then
hands over to Hydra for the run or the multirun sweep."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config.locate import ENV, builtin_config_dir, is_group, register_search_path_plugin, resume_command, search_dirs
from ..errors import ConfigError, Problem, RunInterrupted, UserError
from ..train.cpus import usable_cpus
from .precheck import precheck
from .summary import format_summary

# torch (through ..train) is imported only when a run starts: --help and --cfg answer at once

log = logging.getLogger("mtl_cli")


def _flag(name: str) -> bool:
    """An environment switch: on for 1/true/yes/on, off when unset, empty, 0, false, no or off."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def debugging() -> bool:
    return _flag("MTL_DEBUG") or _flag("HYDRA_FULL_ERROR")


def take_config_dirs(argv: list[str]) -> list[str]:
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

#: error types whose message starts with its own title ("Config error: 2 problems found")
_TITLED = ("UserError", "ConfigError", "DataError", "CheckpointError", "OutputError", "TrainingError")

#: the worst value of an objective, by direction: what a sweeper is told for a failed or diverged job
WORST = {"maximize": -math.inf, "minimize": math.inf}


def sweeper_directions(sweeper) -> list[str] | None:
    """``hydra.sweeper.direction`` as a list of 'maximize'/'minimize' (Optuna's sweeper), or None
    when the sweeper takes no direction (Hydra's basic sweeper ignores what jobs return)."""
    d = sweeper.get("direction") if sweeper is not None else None
    if d is None:
        return None
    items = list(d) if isinstance(d, (list, tuple, ListConfig)) else [d]
    return [str(getattr(x, "name", x)).lower() for x in items]


def objective_values(summary: dict | None, objectives: list[str] | None) -> tuple[list[float], list[str]]:
    """What a job returns to the sweeper, NaN where there is no value: the selection score
    (``objectives`` null) or each ``<task>/<metric>`` val metric at the selected epoch; and the
    reason of each NaN."""
    from ..train.trainer import objective_value

    if summary is None:
        return [math.nan] * max(1, len(objectives or [])), []
    if not objectives:
        v = objective_value(summary)
        return [v], ([] if math.isfinite(v) else ["the run has no finite selection score (diverged?)"])
    values, why = [], []
    for o in objectives:
        task, metric = o.split("/", 1)
        v = ((summary.get("val_selected") or {}).get(task) or {}).get(metric)
        v = math.nan if v is None else float(v)
        if math.isnan(v):
            why.append(f"{o} is NaN at the selected epoch")
        values.append(v)
    return values, why


def _note(run_dir: str, message: str) -> None:
    """A warning on stderr and at the end of the job's train.log."""
    sys.stderr.write(message + "\n")
    try:
        with open(Path(run_dir) / "train.log", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} WARNING {message}\n")
    except OSError:
        pass


def sweep_return(
    summary: dict | None, cfg: DictConfig, directions: list[str] | None, run_dir: str, failure: str | None = None
) -> float | list[float]:
    """The job's return value: one float, or a list for several objectives. For a sweeper with
    directions (Optuna), a NaN would crash the study: it becomes the worst value of its direction
    (-inf when maximizing, +inf when minimizing), so the trial ranks last, and the log says why."""
    values, why = objective_values(summary, cfg.get("objectives"))
    if failure is not None:
        why = [f"the run failed ({failure})"]
    if directions is not None and len(directions) == len(values) and any(math.isnan(v) for v in values):
        values = [WORST.get(d, -math.inf) if math.isnan(v) else v for v, d in zip(values, directions)]
        _note(
            run_dir,
            f"objective of {run_dir}: {'; '.join(why) or 'NaN'}; the sweeper is told {values} "
            f"(the worst value for direction {directions if len(directions) > 1 else directions[0]})",
        )
    return values[0] if len(values) == 1 else values


def headline(kind: str, message: str) -> str:
    """One line for a failed job: ``<type>: <message>``, or for our own errors (whose message is
    titled, "Training stopped: 1 problem found" then the problems) the title and the first problem."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()] or [""]
    if kind not in _TITLED:
        return f"{kind}: {lines[0]}"
    problems = [line.strip()[2:] for line in lines[1:] if line.startswith("  - ")]
    if not problems:
        return lines[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{lines[0].split(':', 1)[0]}: {problems[0]}{more}"


#: environment variables that set torch's CPU threads: when one is set, mtl-train leaves them alone
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def configure_threads(device: str = "auto") -> str | None:
    """torch's CPU threads for a run, decided once at its start and never from the load.

    torch starts one thread per core of the machine, even when the process may use fewer
    (``taskset``, a container's cpuset, a Slurm allocation): then the threads wait on each other.
    Unless OMP_NUM_THREADS or MKL_NUM_THREADS is set, the count is capped at the usable CPUs.

    The thread count is not lowered when the machine is busy, although that would be faster there:
    results on CPU differ in their last digits with another thread count, and a run must give the
    same metrics (and a resume the same weights) whatever else the machine is doing. When the load
    average already fills the usable CPUs, the returned warning says so and gives the fix
    (OMP_NUM_THREADS=1). Returns None otherwise."""
    import torch

    if any(os.environ.get(v, "").strip() for v in THREAD_VARS):
        return None
    cpus = usable_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
    threads = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not on_cpu or threads < 2 or load < cpus:
        return None
    return (
        f"warning: the CPU is busy (load average {load:.1f} on {cpus} usable CPUs), and torch's {threads} threads "
        "wait on each other when one loses its core: this run may be several times slower than on an idle "
        "machine. OMP_NUM_THREADS=1 mtl-train ... avoids that (its metrics then differ in the last digits)."
    )


def version_text() -> str:
    """``mtl-train --version``: ours, then the versions of what runs the training."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"mtl-cli {v('mtl-cli')} (torch {v('torch')}, torchvision {v('torchvision')}, hydra-core {v('hydra-core')}, "
        f"Python {sys.version.split()[0]})"
    )


def _record_failure(run_dir: str, e: BaseException) -> None:
    """error.json in the job's directory, if the run failed before train() could write it (a
    config error found at validation): the sweep's end finds it there, in any process."""
    path = Path(run_dir) / "error.json"
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"type": type(e).__name__, "message": str(e)}, indent=2) + "\n")
        except OSError:
            pass


@hydra.main(config_path=str(builtin_config_dir()), config_name="train", version_base="1.3")
def _hydra_task(cfg: DictConfig) -> float | list[float]:
    from ..train import distributed
    from ..train.api import train

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    directions = sweeper_directions(hc.sweeper) if multirun else None
    comm = distributed.current()
    if not comm.active and distributed.environment() is not None:  # a launcher's task (submitit's Slurm tasks)
        comm = distributed.setup(cfg.trainer.dist_backend, float(cfg.trainer.dist_timeout_s))
    out = hc.runtime.output_dir
    if comm.active:  # every process trains into rank 0's directory (the others' Hydra writes elsewhere)
        out = comm.broadcast_object(out)
    say = sys.stderr.write if comm.is_main else (lambda _text: None)  # rank 0 reports
    busy = configure_threads(str(cfg.get("device", "auto")))
    if busy:
        say(busy + "\n")
    try:
        summary = train(cfg, out, list(hc.overrides.task))
    except RunInterrupted as e:
        say(f"{e}\nContinue with: {resume_command(Path(e.checkpoint).parent.parent)}\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    except UserError as e:
        if debugging():
            raise
        say(e.render() + "\n")
        if multirun:  # one bad job does not stop the sweep; its error is in its run dir
            first = headline(type(e).__name__, e.render())
            FAILED_JOBS.append((out, first))
            _record_failure(out, e)
            return sweep_return(None, cfg, directions, out, failure=first)
        raise SystemExit(e.exit_code) from None
    except Exception as e:
        if not multirun or debugging():
            raise
        # an unexpected failure of one job: recorded in its run dir (error.json, train.log), the sweep goes on
        say(f"job {hc.job.num} failed: {type(e).__name__}: {e} (traceback in {out}/train.log)\n")
        FAILED_JOBS.append((out, f"{type(e).__name__}: {e}"))
        _record_failure(out, e)
        return sweep_return(None, cfg, directions, out, failure=f"{type(e).__name__}: {e}")
    if summary is not None and cfg.logger.console_summary and comm.is_main:
        print(format_summary(summary), flush=True)
    return sweep_return(summary, cfg, directions, out)


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
    from ..train.checkpoint import CheckpointError, find_checkpoint, run_dir_of

    resume = _value_of(argv, "resume")
    if resume in (None, "", "null", "auto"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise CheckpointError(
            [
                Problem(
                    "resume",
                    "resume=<path> continues one run, not a sweep",
                    resume,
                    fix="for a sweep set hydra.sweep.dir to the sweep's folder and resume=auto",
                )
            ]
        )
    ckpt = find_checkpoint(resume, Path.cwd())
    if not ckpt.is_file():
        raise CheckpointError(
            [
                Problem(
                    "resume",
                    f"no checkpoint at {ckpt}",
                    resume,
                    fix="name a run directory holding checkpoints/last.pt, or a .pt file",
                )
            ]
        )
    run = run_dir_of(ckpt)
    saved = replayable_overrides(run / "overrides.yaml")
    added = {s.split("=", 1)[0][1:] for s in saved if s.startswith("+") and not s.startswith("++")}
    rest = []
    for a in argv:
        if a.lstrip("+~").startswith("run_dir="):
            continue
        if a.startswith("~") and a in saved:
            continue  # deleted by the replayed overrides already: a second deletion fails
        key = a.split("=", 1)[0]
        if key.startswith("+") and not key.startswith("++") and key[1:] in added:
            a = a[1:]  # the replayed overrides add the key; a plain override now sets it
        rest.append(a)
    return saved + rest + [f"run_dir={run}"]


def replayable_overrides(path: Path) -> list[str]:
    """The overrides of a run's ``overrides.yaml`` that a resume replays, read as untrusted data.

    mtl-train writes there only the plain ``key=value`` overrides of its command line, so the file
    must be a list of such lines: a Hydra flag (``--config-dir``, ``--experimental-rerun`` ...), a
    ``hydra`` key or group, a sweep or anything that does not parse is refused (the file was not
    written by mtl-train, and replaying it could load another config or run code), naming the
    line. The keys in ``NOT_REPLAYED`` (where to resume, ``allowed_targets``) are left out.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from ..config.untrusted import UntrustedYAMLError, load_untrusted_yaml
    from ..train.checkpoint import CheckpointError
    from ..train.run import NOT_REPLAYED

    if not path.is_file():
        return []
    fix = "this file is not one mtl-train wrote; remove the line (or the file) if you trust the rest of the run"
    try:
        loaded = load_untrusted_yaml(path.read_bytes())
    except (OSError, UntrustedYAMLError) as e:
        raise CheckpointError([Problem(str(path), f"cannot read: {e}", fix=fix)]) from None
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise CheckpointError([Problem(str(path), "not a list of overrides", type(loaded).__name__, fix=fix)])
    parser = OverridesParser.create()
    out, problems = [], []
    for i, line in enumerate(loaded):
        where = f"{path}: entry {i + 1}"
        if not isinstance(line, str) or line.strip().startswith("-") or "=" not in line:
            problems.append(Problem(where, "not a key=value override (a flag or another value)", line, fix=fix))
            continue
        try:
            (o,) = parser.parse_overrides([line])
        except (HydraException, ValueError, RecursionError):
            problems.append(Problem(where, "does not parse as an override", line, fix=fix))
            continue
        key = o.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra" or o.is_sweep_override():
            problems.append(Problem(where, "a hydra key or a sweep: never replayed", line, fix=fix))
            continue
        if key not in NOT_REPLAYED:
            out.append(line)
    if problems:
        raise CheckpointError(problems)
    return out


#: Hydra sweeper and launcher plugins: the module each needs and the extra that installs it
PLUGINS = {
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna", "the Optuna sweeper (hydra-optuna-sweeper)"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib", "the joblib launcher (hydra-joblib-launcher)"),
    "submitit_local": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "the submitit launcher (hydra-submitit-launcher)",
    ),
    "submitit_slurm": (
        "hydra_plugins.hydra_submitit_launcher",
        "slurm",
        "the submitit launcher (hydra-submitit-launcher)",
    ),
}
PLUGIN_USE = re.compile(r"^\s*-\s*override\s+/?hydra/(?:sweeper|launcher)\s*:\s*(\w+)", re.MULTILINE)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing too
        return False


def _option_file(group: str, option: str) -> Path | None:
    for d in search_dirs():
        f = d / group / f"{option}.yaml"
        if f.is_file():
            return f
    return None


#: what the Slurm launcher runs (submitit checks for srun, submits with sbatch)
SLURM_COMMANDS = ("sbatch", "srun")


def check_plugins(argv: list[str]) -> None:
    """A config option that needs a Hydra plugin (``hparams_search=optuna``, ``launcher=joblib``,
    ``hydra/launcher=...``) names the pip extra to install when the plugin is missing, instead of
    Hydra's 'Could not find hydra/sweeper/optuna'. A Slurm sweep on a machine without Slurm is
    refused the same way, before Hydra creates the sweep's folder."""
    problems = []
    sweeping = _is_sweep_run(argv)
    for a in argv:
        if a.startswith("-") or "=" not in a:
            continue
        key, value = a.lstrip("+~").split("=", 1)
        if key in ("hydra/sweeper", "hydra/launcher"):
            names = [value]
        elif re.fullmatch(r"[\w.-]+", value) and is_group(key) and (f := _option_file(key, value)) is not None:
            names = PLUGIN_USE.findall(f.read_text())
        else:
            continue
        for name in names:
            if name in PLUGINS and not installed(PLUGINS[name][0]):
                module, extra, what = PLUGINS[name]
                problems.append(
                    Problem(
                        key, f"{a} needs {what}, which is not installed", value, fix=f'pip install "mtl-cli[{extra}]"'
                    )
                )
            elif (
                name == "submitit_slurm"
                and sweeping
                and (missing := [c for c in SLURM_COMMANDS if not shutil.which(c)])
            ):
                problems.append(
                    Problem(
                        key,
                        f"{a} submits each job to Slurm, but this machine has no Slurm "
                        f"({' and '.join(missing)} not found on PATH)",
                        value,
                        allowed="run the sweep on the cluster's login node; here: launcher=joblib or "
                        "launcher=submitit_local, or no launcher",
                        fix="run the same command where sbatch works, or try the sweep here with "
                        "launcher=submitit_local (each job in its own process, as Slurm would run it)",
                    )
                )
    if problems:
        raise ConfigError(problems)


def _first_job(argv: list[str]) -> list[str] | None:
    """The overrides of the first job of a multirun command line (None for a single run or --cfg)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .precheck import _GroupOptions

    args = get_args_parser().parse_args(argv)
    if not args.multirun or args.cfg or args.help or args.hydra_help or args.info:
        return None
    parsed = OverridesParser.create().parse_overrides(args.overrides)
    for o in parsed:
        o.config_loader = _GroupOptions()  # glob(...) sweeps list the options of their group through it
    return list(BasicSweeper.split_arguments(parsed, None)[0][0])


def check_sweeper(argv: list[str]) -> None:
    """A sweeper with directions (Optuna) must have one per objective, each the objective's own:
    maximize for the selection score (``objectives`` null), the metric's direction for each
    ``<task>/<metric>``. Checked on the first job's config, before any job starts."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    search = _value_of(args.overrides, "hparams_search") or _value_of(args.overrides, "+hparams_search")
    if search not in (None, "null") and not args.multirun and not (args.cfg or args.help or args.info):
        raise ConfigError(
            [
                Problem(
                    "hparams_search",
                    "a hyperparameter search is a sweep: it needs --multirun",
                    search,
                    fix=f"run mtl-train -m hparams_search={search} ...",
                )
            ]
        )
    job = _first_job(argv)
    if job is None:
        return
    from ..config.compose import compose

    cfg = compose(job, return_hydra_config=True)
    directions = sweeper_directions(cfg.hydra.sweeper)
    if directions is None:
        return
    objectives = cfg.get("objectives")
    if not objectives and cfg.trainer.monitor == "mean_rel":
        raise ConfigError(
            [
                Problem(
                    "trainer.monitor",
                    "mean_rel measures each run against its own first "
                    "evaluation, so a sweeper cannot compare runs by it",
                    "mean_rel",
                    allowed="<task>/<metric> (e.g. shape/accuracy), or delta_m with baseline_dir",
                    fix="set trainer.monitor=<task>/<metric>, or optimize val metrics with "
                    "objectives=[<task>/<metric>, ...] (hparams_search=optuna_multi)",
                )
            ]
        )
    if not objectives:
        expected, what = ["maximize"], "the selection score (higher is better)"
    else:
        from .precheck import validate

        job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        tasks = validate(job_cfg).tasks
        expected = [
            "maximize" if tasks[t]["directions"][m] == "higher" else "minimize"
            for t, m in (o.split("/", 1) for o in objectives)
        ]
        what = f"objectives {list(objectives)}"
    if directions != expected:
        shown = expected[0] if len(expected) == 1 else "[" + ",".join(expected) + "]"
        raise ConfigError(
            [
                Problem(
                    "hydra.sweeper.direction",
                    f"does not match what the jobs return: {what}",
                    directions[0] if len(directions) == 1 else directions,
                    allowed=shown,
                    fix=f"set hydra.sweeper.direction={shown} (one direction per objective, "
                    "in the order of objectives)",
                )
            ]
        )


def failed_jobs(sweep_dir: str | Path, since: float) -> list[tuple[str, str]]:
    """(run dir, error) of every job under ``sweep_dir`` with an error.json written since
    ``since`` (a time.time()): the jobs of this sweep that failed, whichever process ran them."""
    root = Path(sweep_dir).resolve()
    out = []

    def job_order(f: Path) -> list[tuple[int, int | str]]:  # 2 before 10
        return [(0, int(p)) if p.isdigit() else (1, p) for p in f.relative_to(root).parts]

    for f in sorted(root.rglob("error.json"), key=job_order):
        try:
            if f.stat().st_mtime < since:
                continue  # from an earlier sweep into the same directory
            err = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out.append((str(f.parent), headline(str(err.get("type", "Error")), str(err.get("message", "")))))
    return out


#: the sweep directory of the multirun running in this process (set by SweepRecorder)
SWEEP: dict[str, str] = {}


class SweepRecorder(Callback):
    """Hydra callback that main() adds to every multirun: notes the sweep directory, in the
    process that runs the sweeper, whichever launcher runs the jobs (same resolved value as theirs)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        SWEEP["dir"] = str(config.hydra.sweep.dir)


#: the override that adds SweepRecorder (a Hydra override: not a job override, not in overrides.yaml)
RECORDER = f"++hydra.callbacks.mtl_sweep_recorder._target_={__name__}.SweepRecorder"


def _is_sweep_run(argv: list[str]) -> bool:
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    return bool(args.multirun and not (args.cfg or args.help or args.hydra_help or args.info or args.shell_completion))


def _processes(given: list[str], argv: list[str]) -> list[str]:
    """Several processes: ``trainer.devices=N`` without a launcher starts N processes running this
    command line (and exits with their code); under torchrun or Slurm, join the process group and
    return the Hydra overrides of this process (see :mod:`.launch`). Nothing for one process."""
    if "--help" in argv or "-h" in argv or "--cfg" in argv or "-c" in argv:
        return []
    from ..train import distributed
    from .launch import hydra_overrides_for, join_group, relaunch, requested_devices

    if distributed.environment() is None:
        devices = requested_devices(argv)
        if isinstance(devices, int) and devices > 1:
            raise SystemExit(relaunch(devices, given))
        return []
    return hydra_overrides_for(join_group(argv))


def check_command_line(argv: list[str], run_dir_checks: bool = True) -> list[str]:
    """Every check of mtl-train's command line (``--config-dir`` already taken out), before Hydra
    runs anything: a ``resume=<run>`` replayed into its overrides, plugins installed, every
    override and the composed config (precheck), a sweeper's directions. Returns the command
    line to run (with the replayed overrides); raises ConfigError (and the other UserErrors) with
    every problem. ``run_dir_checks=False`` leaves out the checks of the run directory (the Python
    API makes them when a run starts)."""
    register_search_path_plugin()
    argv = replay_resume(argv)
    check_plugins(argv)
    precheck(argv, run_dir_checks=run_dir_checks)
    check_sweeper(argv)
    return argv


def main(argv: list[str] | None = None) -> None:
    from ..train.distributed import leaving_cleanly

    with leaving_cleanly():  # a process of several (torchrun) ends with its status, past finalisation
        try:
            _main(argv)
        finally:
            trackers_done()


def trackers_done() -> None:
    """Wait, before the process's exit hooks, for every tracker of the runs that ended here.

    A tracker still starting when a short run ends registers its own exit hooks while it starts
    (W&B's service teardown, the clean-up of its temporary folder), so they would run before
    ours and pull the service from under it: W&B failed with "Connection lost" or "Failed to read
    port info", now and then on a loaded machine, and always when started late. Waiting here, the
    trackers have ended (bounded by each backend's ``close_timeout_s``) before any hook runs."""
    loggers = sys.modules.get("mtl_cli.train.loggers")  # imported only where a run was set up
    if loggers is not None:
        loggers.wait()


def _main(argv: list[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv:  # Hydra's --version prints Hydra's
        print(version_text())
        return
    try:
        argv = take_config_dirs(argv)
        given = list(argv)  # before the resume's replay: a relaunched process replays it itself
        argv = check_command_line(argv)
        argv += _processes(given, argv)
    except UserError as e:
        if debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(e.exit_code) from None
    sweeping = _is_sweep_run(argv)
    sys.argv = [sys.argv[0], *argv, *([RECORDER] if sweeping else [])]
    FAILED_JOBS.clear()
    SWEEP.clear()
    started = time.time() - 1.0  # error.json files of this sweep are newer (1 s for coarse file times)
    try:
        _hydra_task()
    except BrokenPipeError:  # `mtl-train --help | head`: the reader left, nothing is wrong
        sys.stderr.close()
    failed = {str(Path(d).resolve()): (d, msg) for d, msg in FAILED_JOBS}  # jobs run in this process
    sweep_dir = SWEEP.get("dir")
    if sweep_dir is not None:  # and jobs run elsewhere (joblib, submitit): their error.json
        for d, msg in failed_jobs(sweep_dir, started):
            failed.setdefault(str(Path(d).resolve()), (d, msg))
    if failed:  # a sweep ran to its end, but not every job succeeded
        lines = [f"{len(failed)} job(s) of the sweep failed (error.json and train.log in each):"]
        lines += [f"  - {d}: {msg}" for d, msg in failed.values()]
        sys.stderr.write("\n".join(lines) + "\n")
        raise SystemExit(EXIT_FAILED)


if __name__ == "__main__":
    main()
