#!/usr/bin/env python3
"""Regenerate the README's and docs' generated sections from the code as it is.

A generated section sits between two marker comments (invisible when the Markdown is rendered)::

    <!-- generated: NAME -->
    ...
    <!-- end generated -->

Two kinds of section:

- **tables** (fast): option lists and tables read from ``conf/`` (the config groups and their
  options, the keys of a task);
- **outputs**: a console transcript (``$ command`` then what it printed), made by running the
  commands in a fresh folder with the environment that runs this script (``.venv/bin/python
  tools/gen_docs.py``), importing mtl_cli from this checkout. The *fast* outputs need no training
  (config errors, ``mtl-configs``); the *slow* ones train (the default run takes about a minute on
  an idle 2-core machine, the workflow runs a few minutes more).

In the transcripts, the temporary folder the commands ran in is shown as ``/tmp/demo``; the
warning about a busy CPU (mtl-train prints it when the load fills the CPUs) and progress bars are
left out.

Usage::

    python tools/gen_docs.py                    # rewrite every section (trains: several minutes)
    python tools/gen_docs.py --only tables      # tables only; also: fast, slow, or section names
    python tools/gen_docs.py --check [--only fast]   # exit 1 and show the differences when stale

``--check`` compares every word and integer exactly and the decimals (metrics) to within 5 % or
0.02 (``close_numbers``: the same code and packages trained to other last digits on two machines
that both report "AMD EPYC"); times, memory, dates and the step a signal arrived at are masked (they differ from run to
run), and a few sections whose columns move with those (``check="loose"``) are compared word by
word. tests/test_docs_truth.py runs the fast
checks in the default suite and the slow ones with ``-m slow``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
VENV_BIN = Path(sys.executable).parent  # the environment running this script: mtl-train and python there
SHOWN_ROOT = "/tmp/demo"  # how the temporary folder of the transcripts is shown
START = re.compile(r"^<!-- generated: ([\w.-]+) -->$")
END = "<!-- end generated -->"

# ----------------------------------------------------------------------------- tables from conf/

#: what a group is, for the groups whose line in train.yaml has no comment (or that train.yaml
#: does not list)
GROUP_TEXT = {
    "optimizer": "any `torch.optim` class via `_target_`",
    "scheduler": "any `torch.optim.lr_scheduler` class via `_target_`, plus `warmup_steps`",
    "trainer": "epochs, batch size, precision, accumulation, clipping, evaluation, selection, devices",
    "logger": "logging interval, jsonl/csv, the end-of-run summary, experiment trackers (TensorBoard, MLflow, W&B)",
    "task": "presets of one task per kind, placed under any name in a `tasks` config (`- /task@<name>: <kind>`)",
}
#: groups that are not options a user picks (Hydra's own settings)
HIDDEN_GROUPS = ("hydra",)


def _train_defaults() -> list[tuple[str, str | None, str]]:
    """(group, default option or None, comment) in the order of train.yaml's defaults list."""
    pat = re.compile(r"^\s*-\s*([\w/]+)\s*:\s*([\w.-]+|null)\s*(?:#\s*(.*))?$")
    out = []
    for line in (CONF / "train.yaml").read_text().splitlines():
        m = pat.match(line)
        if m:
            group, option, comment = m.groups()
            out.append((group, None if option == "null" else option, (comment or "").strip()))
    return out


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def config_groups_table() -> str:
    rows = ["| group | options | what it is |", "|---|---|---|"]
    listed = []
    for group, default, comment in _train_defaults():
        if group in HIDDEN_GROUPS or not (CONF / group).is_dir():
            continue
        listed.append(group)
        options = group_options(group)
        if default in options and len(options) > 1:
            options = [f"{default} (default)", *[o for o in options if o != default]]
        text = GROUP_TEXT.get(group) or comment or ""
        text = re.sub(r"^\w+=\w+[^:]*: ", "", text) if group == "debug" else text
        rows.append(f"| `{group}` | {', '.join(options)} | {text} |")
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir()):
        if group in listed or group in HIDDEN_GROUPS:
            continue
        rows.append(f"| `{group}` | {', '.join(group_options(group))} | {GROUP_TEXT.get(group, '')} |")
    return "\n".join(rows)


def task_keys() -> str:
    keys = [
        m.group(1)
        for line in (CONF / "task" / "base.yaml").read_text().splitlines()
        if (m := re.match(r"^(\w+):", line))
    ]
    listed = ", ".join(f"`{k}`" for k in keys[:-1]) + f" and `{keys[-1]}`"
    return f"Every task key (`conf/task/base.yaml`): {listed}."


# ----------------------------------------------------------------------------- running commands


@dataclass
class Shell:
    """Runs transcript commands with bash in ``root``: the running environment's scripts first on
    PATH, mtl_cli and conf/ from this checkout (PYTHONPATH)."""

    root: Path
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "COLUMNS": "100",  # mtl-report wraps its table to this width
            "PYTHONUNBUFFERED": "1",  # stdout and stderr in the order they were written
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        for v in ("MTL_DEBUG", "HYDRA_FULL_ERROR", "MTL_CONFIG_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            self.env.pop(v, None)
        shutil.copytree(REPO / "examples", self.root / "examples", ignore=shutil.ignore_patterns("__pycache__"))

    def clean(self, text: str) -> str:
        lines = []
        for line in text.replace(str(self.root.resolve()), SHOWN_ROOT).replace(str(self.root), SHOWN_ROOT).split("\n"):
            if "\r" in line or line.startswith("warning: the CPU is busy"):
                continue  # a progress bar; the load of the machine that made the docs
            lines.append(re.sub(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]", "", line).rstrip())  # Hydra's log time
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def run(self, cmd: str, stdout_only: bool = False, timeout: float = 3600) -> tuple[int, str]:
        done = subprocess.run(
            ["bash", "-c", cmd],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if stdout_only else subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        return done.returncode, self.clean(done.stdout)

    def step(
        self,
        cmd: str,
        shown: str | None = None,
        keep: Callable[[list[str]], list[str]] | None = None,
        stdout_only: bool = False,
        rc: int | None = 0,
        echo_rc: bool = False,
    ) -> str:
        """``$ shown`` (default: the command) and its output, filtered by ``keep``; the exit code
        must be ``rc`` (None: any)."""
        code, out = self.run(cmd, stdout_only)
        if rc is not None and code != rc:
            raise RuntimeError(f"{cmd!r} exited {code}, expected {rc}:\n{out[-3000:]}")
        lines = out.split("\n") if out else []
        if keep is not None:
            lines = keep(lines)
        text = "\n".join([f"$ {shown or cmd}", *lines])
        if echo_rc:
            text += f"\n$ echo $?\n{code}"
        return text

    def interrupted(self, cmd: str, records: str) -> str:
        """``cmd`` sent SIGTERM as soon as the file ``records`` (relative to the root) holds a
        line: the first train record of metrics.jsonl, so the signal lands at a known point of the
        first epoch however fast the machine is (a fixed delay once landed at the epoch's end, and
        the run validated before it stopped)."""
        path = self.root / records
        path.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {cmd}"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 600
        while not (path.exists() and path.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{cmd!r} wrote no line to {records} (exit {proc.poll()})")
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=600)
        out = self.clean(rest)
        return f"$ {cmd}   # then SIGTERM from the scheduler\n{out}\n$ echo $?\n{proc.returncode}"


def head(n: int, more: bool = True) -> Callable[[list[str]], list[str]]:
    return lambda lines: lines[:n] + (["..."] if more and len(lines) > n else [])


def tail(n: int) -> Callable[[list[str]], list[str]]:
    return lambda lines: (["..."] if len(lines) > n else []) + lines[-n:]


def grep(*patterns: str, dots: bool = True) -> Callable[[list[str]], list[str]]:
    """The lines matching any pattern, "..." where lines were left out."""

    def keep(lines: list[str]) -> list[str]:
        out: list[str] = []
        for line in lines:
            if any(re.search(p, line) for p in patterns):
                out.append(line)
            elif dots and (not out or out[-1] != "..."):
                out.append("...")
        while dots and out and out[0] == "...":
            out.pop(0)
        return out

    return keep


def until(pattern: str) -> Callable[[list[str]], list[str]]:
    """The lines before the first one matching ``pattern`` (trailing blank lines dropped)."""

    def keep(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            if re.search(pattern, line):
                break
            out.append(line)
        while out and not out[-1].strip():
            out.pop()
        return out

    return keep


# ----------------------------------------------------------------------------- sessions

#: the tiny setting of the mtl-report example
TINY = (
    "backbone=mlp data.train_size=128 data.val_size=32 data.test_size=32 data.image_size=16 "
    "tasks.segmentation.enabled=false tasks.present.enabled=false trainer.batch_size=32 trainer.max_epochs=3 "
    "trainer.progress=false device=cpu logger.console_summary=false"
)
THREE = "tasks.segmentation.enabled=false trainer.max_epochs=3 trainer.progress=false"
HOUSES = (
    "experiment=tabular data.path=examples/houses.csv 'data.targets={price: price, kind: kind}' "
    "+tasks.price.kind=regression +tasks.kind.kind=classification trainer.max_epochs=30"
)


def session_fast(sh: Shell) -> dict[str, str]:
    """Commands that train nothing: config errors and mtl-configs. They spend their time starting
    Python and importing torch and Hydra, so independent ones run at the same time (the copy, its
    edit and the composed config in order)."""
    missing = (
        "python -c 'import sys, mtl_cli.cli.train as t; t.installed = lambda module: False; "
        "t.main(sys.argv[1:])' -m launcher=joblib seed=0,1"
    )

    copies: dict[str, str] = {}

    def configs() -> str:
        listing = sh.step("mtl-configs list launcher hparams_search", keep=head(6))
        copied = sh.step("mtl-configs copy my_conf optimizer experiment")
        sed = sh.step("sed -i 's/^lr: 0.003$/lr: 0.001/' my_conf/optimizer/adamw.yaml")
        cfg = sh.step("mtl-train --config-dir my_conf --cfg job | grep -A3 '^optimizer:'")
        copies["configs-copy"] = copied
        return "\n".join([listing, copied, sed, cfg])

    jobs: dict[str, Callable[[], str]] = {
        "config-error": lambda: sh.step(
            "mtl-train trainer.max_epoch=3 tasks.shape.target=colour arch=mmeo", rc=2, echo_rc=True
        ),
        "slurm-error": lambda: sh.step("mtl-train -m launcher=slurm seed=0,1", rc=2, echo_rc=True),
        "missing-plugin": lambda: sh.step(missing, shown="mtl-train -m launcher=joblib seed=0,1", rc=2),
        "optuna-multi-error": lambda: sh.step(
            "mtl-train -m hparams_search=optuna_multi hydra.sweeper.direction=[maximize,maximize,maximize] "
            "objectives=[shape/accuracy,size/mae,present/f1] tasks.segmentation.enabled=false",
            rc=2,
        ),
        "configs": configs,
    }
    with ThreadPoolExecutor(max_workers=min(len(jobs), max(2, os.cpu_count() or 1))) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        out = {name: f.result() for name, f in futures.items()}
    return out | copies


def session_default(sh: Shell) -> dict[str, str]:
    """The README's first command: the default experiment (about a minute on 2 idle cores)."""
    return {"default-run": sh.step("mtl-train", keep=until(r"^\* primary metric"), stdout_only=True)}


def session_workflow(sh: Shell) -> dict[str, str]:
    """Baselines and Δm, evaluation, prediction, a search, a report, a signal (a few minutes)."""
    out = {}
    out["stl"] = sh.step(f"mtl-train baseline=stl run_dir=outputs/stl {THREE}")
    out["stl-short"] = "\n".join(
        [
            out["stl"].split("\n")[0],
            "...",
            *[ln for ln in out["stl"].split("\n") if re.match(r"baseline \w+:|baselines written", ln)],
        ]
    )
    dm = sh.step(f"mtl-train baseline_dir=outputs/stl run_dir=outputs/mtl {THREE}", stdout_only=True)
    out["delta-m-run"] = dm
    out["delta-m-json"] = sh.step(
        "python -c \"import json; print(json.dumps(json.load(open('outputs/mtl/summary.json'))['delta_m'], indent=2))\""
    )
    out["monitor-delta-m"] = sh.step(
        f"mtl-train baseline_dir=outputs/stl run_dir=outputs/mtl_dm trainer.monitor=delta_m {THREE}",
        keep=grep(r"^epoch \d", r"^Selected epoch", r"^Run directory", r"Δm", dots=False),
    )
    out["baseline-missing"] = sh.step("mtl-train baseline_dir=outputs/stl", rc=2)
    sh.run("mtl-train run_dir=outputs/demo trainer.max_epochs=3 trainer.progress=false logger.console_summary=false")
    out["demo-train"] = "$ mtl-train run_dir=outputs/demo trainer.max_epochs=3"
    out["eval"] = sh.step("mtl-eval outputs/demo")
    out["eval-new-data"] = sh.step("mtl-eval outputs/demo data.seed=7 data.test_size=1000")
    out["predict"] = sh.step("mtl-predict outputs/demo input=examples/images/ output=preds.csv")
    out["predict-head"] = sh.step("head -2 preds.csv")
    out["truth"] = sh.step("cat examples/images.csv")
    sh.run("python -c \"from PIL import Image; Image.new('RGB', (64, 48), (40, 40, 40)).save('photo.png')\"")
    out["predict-bad-size"] = sh.step("mtl-predict outputs/demo input=photo.png", rc=2)
    sh.run(f"mtl-train {HOUSES} run_dir=outputs/houses trainer.progress=false")
    out["houses-train"] = sh.step(
        f"mtl-train {HOUSES} run_dir=outputs/houses overwrite=true", keep=until(r"^\* primary metric"), stdout_only=True
    )
    out["houses-predict"] = sh.step("mtl-predict outputs/houses input=examples/new_houses.csv output=house_preds.csv")
    out["optuna"] = sh.step(
        "mtl-train -m hparams_search=optuna hydra.sweeper.n_trials=4 debug=smoke",
        keep=grep(r"^\[HYDRA\] (Sampler|Directions|\t#0 |Best )"),
    )
    b = f'B="{TINY}"'
    sh.run(f"mtl-train baseline=stl run_dir=stl {TINY}")
    sh.run(f"mtl-train -m seed=0,1 weighting=ew,uw baseline_dir=$PWD/stl hydra.sweep.dir=sweep {TINY}")
    report = sh.step("mtl-report sweep stl --out report")
    out["report"] = "\n".join(
        [
            f"$ {b}",
            "$ mtl-train baseline=stl run_dir=stl $B",
            "$ mtl-train -m seed=0,1 weighting=ew,uw baseline_dir=$PWD/stl hydra.sweep.dir=sweep $B",
            report,
        ]
    )
    out["report-table"] = sh.step(
        "mtl-report sweep stl --out report --metrics primary --no-plots", keep=until(r"^wrote \d+ file")
    )
    out["sigterm"] = sh.interrupted(
        "mtl-train run_dir=outputs/job7 resume=auto trainer.progress=false", records="outputs/job7/metrics.jsonl"
    )
    return out


def session_data(sh: Shell) -> dict[str, str]:
    """docs/data.md's example of a data error: examples/houses.csv with 'abc' as a price (no
    training; the error stops the run before anything is built), and a Mulan run without data.set."""
    sh.run(
        "python -c \"import csv; r = list(csv.reader(open('examples/houses.csv'))); r[7][4] = 'abc'; "
        "csv.writer(open('bad_houses.csv', 'w', newline='')).writerows(r)\""
    )
    bad = HOUSES.replace("examples/houses.csv", "bad_houses.csv").replace(" trainer.max_epochs=30", "")
    return {
        "data-error": sh.step(f"mtl-train {bad}", rc=2, echo_rc=True),
        "mulan-error": sh.step("mtl-train experiment=mulan data.path=data/mulan_mtr", rc=2),
    }


def session_ecosystem(sh: Shell) -> dict[str, str]:
    """docs/ecosystem.md's worked examples: trackers, mtl-export, timm, the Python API, an Optuna
    study kept in SQLite (a few minutes)."""
    out = {}
    mlflow_py = (
        "import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db'); "
        "(r,) = mlflow.search_runs(experiment_names=['mtl'], output_format='list'); "
        "print(r.info.status, r.data.metrics['test/shape/accuracy'], r.data.params['optimizer.lr']); "
        "print(sorted(a.path for a in mlflow.MlflowClient().list_artifacts(r.info.run_id)))"
    )
    out["eco-mlflow"] = "\n".join(
        [
            sh.step(
                "mtl-train logger=mlflow trainer.max_epochs=1 run_dir=outputs/tracked",
                keep=grep(r"^Run directory", r"^Selected epoch", r"^shape ", dots=False),
                stdout_only=True,
            ),
            sh.step(f'python -c "{mlflow_py}"', stdout_only=True),
        ]
    )
    out["eco-wandb"] = "\n".join(
        [
            sh.step(  # a tracker's warning would show (and fail the docs check)
                "mtl-train logger=wandb debug=smoke run_dir=outputs/wb",
                keep=grep(r"^Run directory|^logger backend|^wandb:", dots=False),
            ),
            sh.step("ls outputs/wb"),
        ]
    )
    out["eco-export"] = "\n".join(
        [
            sh.step("mtl-export outputs/tracked"),
            sh.step("python examples/read_export.py outputs/tracked/export/best examples/images/shape_0.png"),
            sh.step("mtl-predict outputs/tracked/export/best input=examples/images/shape_0.png output=one.csv"),
        ]
    )
    save = "import timm, torch; torch.save(timm.create_model('resnet18').state_dict(), 'resnet18.pth')"
    out["eco-timm"] = "\n".join(
        [
            sh.step(f'python -c "{save}"'),
            sh.step(
                "mtl-train backbone=timm backbone.model=resnet18 backbone.weights=resnet18.pth arch=mtan debug=smoke",
                keep=grep(r"Loading pretrained|Loaded ", r"^model:", r"^Selected epoch", dots=True),
            ),
        ]
    )
    study = "hparams_search=optuna hydra.sweeper.storage=sqlite:///optuna.db hydra.sweeper.study_name=lr_wd"
    hydra_lines = grep(r"^\[HYDRA\] (Study name|Storage|\t#\d |Best )")
    read = "import optuna; s = optuna.load_study(study_name='lr_wd', storage='sqlite:///optuna.db'); "
    read += "print([t.number for t in s.trials], s.best_value)"
    out["eco-optuna"] = "\n".join(
        [
            sh.step(f"mtl-train -m {study} hydra.sweeper.n_trials=2 debug=smoke", keep=hydra_lines),
            sh.step(
                f"mtl-train -m {study} hydra.sweeper.n_trials=2 hydra.sweeper.sampler.seed=1 debug=smoke",
                keep=hydra_lines,
            ),
            sh.step(f'python -c "{read}"', stdout_only=True),
        ]
    )
    return out


def session_python_api(sh: Shell) -> dict[str, str]:
    """examples/python_api.py: the default experiment for 3 epochs through the Python API."""
    return {"eco-api": sh.step("python examples/python_api.py", stdout_only=True)}


SESSIONS: dict[str, Callable[[Shell], dict[str, str]]] = {
    "fast": session_fast,
    "default": session_default,
    "workflow": session_workflow,
    "ecosystem": session_ecosystem,
    "python-api": session_python_api,
    "data": session_data,
}

# ----------------------------------------------------------------------------- sections


@dataclass
class Section:
    name: str
    file: str
    kind: str  # table | fast | slow
    make: Callable[[dict[str, str]], str]  # the section's text, from the sessions' outputs
    sessions: tuple[str, ...] = ()
    check: str = "exact"  # exact: the masked text; loose: the words, numbers masked and order ignored


def fenced(*keys: str) -> Callable[[dict[str, str]], str]:
    return lambda out: "```\n" + "\n".join(out[k] for k in keys) + "\n```"


SECTIONS = [
    Section("config-groups", "README.md", "table", lambda out: config_groups_table()),
    Section("task-keys", "README.md", "table", lambda out: task_keys()),
    Section("default-run", "README.md", "slow", fenced("default-run"), ("default",)),
    Section("config-error", "README.md", "fast", fenced("config-error"), ("fast",)),
    Section("sigterm", "README.md", "slow", fenced("sigterm"), ("workflow",)),
    Section(
        "workflow",
        "README.md",
        "slow",
        fenced("stl-short", "delta-m-run", "demo-train", "eval-new-data", "predict", "truth"),
        ("fast", "workflow"),
    ),
    Section("houses", "README.md", "slow", fenced("houses-train", "houses-predict"), ("workflow",)),
    Section("report-excerpt", "README.md", "slow", fenced("report-table"), ("workflow",), check="loose"),
    Section("missing-plugin", "docs/workflow.md", "fast", fenced("missing-plugin"), ("fast",)),
    Section("slurm-error", "docs/workflow.md", "fast", fenced("slurm-error"), ("fast",)),
    Section("optuna", "docs/workflow.md", "slow", fenced("optuna"), ("workflow",)),
    Section("optuna-multi-error", "docs/workflow.md", "fast", fenced("optuna-multi-error"), ("fast",)),
    Section("configs", "docs/workflow.md", "fast", fenced("configs"), ("fast",)),
    Section("stl", "docs/workflow.md", "slow", fenced("stl"), ("workflow",)),
    Section("delta-m", "docs/workflow.md", "slow", fenced("delta-m-run", "delta-m-json"), ("workflow",)),
    Section("monitor-delta-m", "docs/workflow.md", "slow", fenced("monitor-delta-m"), ("workflow",)),
    Section("baseline-missing", "docs/workflow.md", "slow", fenced("baseline-missing"), ("workflow",)),
    Section("report", "docs/workflow.md", "slow", fenced("report"), ("workflow",), check="loose"),
    Section("eval", "docs/workflow.md", "slow", fenced("demo-train", "eval"), ("workflow",)),
    Section("predict", "docs/workflow.md", "slow", fenced("predict", "predict-head", "truth"), ("workflow",)),
    Section("predict-tabular", "docs/workflow.md", "slow", fenced("houses-predict"), ("workflow",)),
    Section("predict-bad-size", "docs/workflow.md", "slow", fenced("predict-bad-size"), ("workflow",)),
    *[
        Section(name, "docs/ecosystem.md", "slow", fenced(name), ("ecosystem",))
        for name in ("eco-mlflow", "eco-wandb", "eco-export", "eco-timm", "eco-optuna")
    ],
    Section("eco-api", "docs/ecosystem.md", "slow", fenced("eco-api"), ("python-api",)),
    Section("data-error", "docs/data.md", "slow", fenced("data-error"), ("data",)),
    Section("mulan-error", "docs/data.md", "slow", fenced("mulan-error"), ("data",)),
]

# ----------------------------------------------------------------------------- files and checks


def find_sections(text: str, path: str) -> dict[str, tuple[int, int]]:
    """name -> (first line, end line) of the body of each generated section of ``text``."""
    lines = text.split("\n")
    found: dict[str, tuple[int, int]] = {}
    i = 0
    while i < len(lines):
        m = START.match(lines[i].strip())
        if m:
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == END), None)
            if j is None:
                raise SystemExit(f"{path}: section {m.group(1)} has no {END}")
            if m.group(1) in found:
                raise SystemExit(f"{path}: section {m.group(1)} appears twice")
            found[m.group(1)] = (i + 1, j)
            i = j
        i += 1
    return found


def replace_section(text: str, path: str, name: str, body: str) -> str:
    lines = text.split("\n")
    a, b = find_sections(text, path)[name]
    return "\n".join(lines[:a] + ["", *body.strip("\n").split("\n"), ""] + lines[b:])  # blank lines: a table ends


def section_body(path: Path, name: str) -> str:
    text = path.read_text()
    a, b = find_sections(text, str(path))[name]
    return "\n".join(text.split("\n")[a:b])


#: what differs from run to run (replaced before comparing): times, memory, dates, the step a
#: signal arrives at, versions
MASKS = (
    r"time/step [\d.]+ ms",
    r"wall [\d.]+ s",
    r"peak memory \d+ MB",
    r"\d{4}-\d\d-\d\d[/_]\d\d-\d\d-\d\d(_\d+)?",
    r"after step \d+",
    r"(step|steps) \d+(?=; checkpoint written)",
    r"largest difference [\d.e+-]+",  # mtl-export's check of an exported file against the model
)


def normalize(text: str, check: str) -> list[str]:
    for m in MASKS:
        text = re.sub(m, "<masked>", text)
    if check == "loose":
        words = re.sub(r"[-+]?\d[\d.,]*(e[-+]?\d+)?", "<n>", text).split()
        return sorted(words)
    return [line.rstrip() for line in text.strip().split("\n")]


def selected(only: list[str] | None) -> list[Section]:
    if not only:
        return list(SECTIONS)
    names = {s.name for s in SECTIONS}
    bad = [o for o in only if o not in ("tables", "fast", "slow", "outputs") and o not in names]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; known: tables, fast, slow, outputs, {', '.join(sorted(names))}")
    kinds = {"tables": {"table"}, "fast": {"fast"}, "slow": {"slow"}, "outputs": {"fast", "slow"}}
    want = {k for o in only for k in kinds.get(o, ())}
    return [s for s in SECTIONS if s.kind in want or s.name in only]


def generate(sections: list[Section], log=print) -> dict[tuple[str, str], str]:
    """(file, name) -> the section's new text; runs each needed session once, in a fresh folder."""
    outputs: dict[str, str] = {}
    for name in dict.fromkeys(s for sec in sections for s in sec.sessions):
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="gen_docs_") as tmp:
            outputs |= SESSIONS[name](Shell(Path(tmp)))
        log(f"session {name}: {time.time() - started:.0f} s")
    return {(s.file, s.name): s.make(outputs) for s in sections}


DECIMAL = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")


def close_numbers(a: list[str], b: list[str], rel: float = 0.05, abs_: float = 0.02) -> bool:
    """The same lines except for decimals within ``rel`` (relative) or ``abs_``: two machines of
    the same CPU name trained the default run to other last digits (mean_rel 0.6913 and 0.6922),
    so a quoted metric is checked to a few percent, every word and integer exactly."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if DECIMAL.sub("<d>", x) != DECIMAL.sub("<d>", y):
            return False
        for u, v in zip(DECIMAL.findall(x), DECIMAL.findall(y)):
            p, q = float(u), float(v)
            if abs(p - q) > max(rel * max(abs(p), abs(q)), abs_):
                return False
    return True


def check(sections: list[Section], new: dict[tuple[str, str], str]) -> list[str]:
    """The differences between the files and ``new``, as unified diffs (empty: up to date)."""
    problems = []
    for s in sections:
        have = section_body(REPO / s.file, s.name)
        want = new[(s.file, s.name)]
        a, b = normalize(have, s.check), normalize(want, s.check)
        if a != b and not (s.check == "exact" and close_numbers(a, b)):
            diff = "\n".join(difflib.unified_diff(a, b, f"{s.file} ({s.name})", "regenerated", lineterm="", n=1))
            problems.append(diff)
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the generated sections of README.md and docs/*.md.")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a section is out of date")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="WHAT",
        help="tables, fast, slow, outputs (fast and slow) or section names (default: everything)",
    )
    p.add_argument("--list", action="store_true", help="list the sections and exit")
    args = p.parse_args(argv)
    if args.list:
        for s in SECTIONS:
            print(f"{s.name:<20} {s.kind:<6} {s.file}  sessions: {', '.join(s.sessions) or '-'}")
        return 0
    sections = selected(args.only)
    for s in sections:  # every section has its markers before anything runs
        if s.name not in find_sections((REPO / s.file).read_text(), s.file):
            raise SystemExit(f"{s.file}: no section {s.name} (<!-- generated: {s.name} --> ... {END})")
    new = generate(sections, log=lambda m: print(m, file=sys.stderr))
    if args.check:
        problems = check(sections, new)
        for d in problems:
            print(d + "\n")
        if problems:
            print(f"{len(problems)} section(s) out of date: run python tools/gen_docs.py", file=sys.stderr)
        return 1 if problems else 0
    for (file, name), body in new.items():
        path = REPO / file
        path.write_text(replace_section(path.read_text(), file, name, body))
    print(f"wrote {len(new)} section(s): {', '.join(shlex.quote(n) for _, n in new)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
