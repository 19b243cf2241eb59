"""Sweeps beyond Hydra's basic launcher: the Optuna sweeper (hparams_search=optuna, optuna_multi),
NaN-safe objectives, the joblib and submitit launchers, failed jobs of launchers that run jobs in
other processes, and the checks mtl-train makes before a sweep starts.

Optuna sweeps run in-process (Hydra's basic launcher: a few trials of the tiny BASE runs). The
joblib and submitit tests start real worker processes and are marked slow. Each test of an
optional plugin skips, naming the extra to install, when the plugin is absent; CI installs them
all (the `test` extra includes `all`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from test_resume import BASE

import mtl_cli.cli.train as cli
import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.errors import ConfigError
from mtl_cli.validation import validate


def _needs(module: str, extra: str):
    return pytest.mark.skipif(
        not cli.installed(module), reason=f'{module} is not installed: pip install "mtl-cli[{extra}]"'
    )


needs_optuna = _needs("hydra_plugins.hydra_optuna_sweeper", "optuna")
needs_joblib = _needs("hydra_plugins.hydra_joblib_launcher", "joblib")
needs_submitit = _needs("hydra_plugins.hydra_submitit_launcher", "slurm")

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*declarative_base.*"),  # optuna 2.10 on SQLAlchemy 2
    pytest.mark.filterwarnings("ignore:Deprecated API features detected"),  # optuna 2.10 on SQLAlchemy 1.4
]

# BASE for one epoch (4 steps): a trial takes about a second in-process
FAST = [*BASE, "trainer.max_epochs=1"]


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _main(argv: list[str], capsys) -> tuple[int, str]:
    """Run mtl-train in-process: (exit code, stderr)."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _jobs(sweep: Path) -> list[Path]:
    return sorted((d for d in sweep.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))


def _summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def _params(job: Path, keys) -> dict:
    """The values a job got for ``keys``, from its overrides.yaml (as the sweeper wrote them)."""
    out = {}
    for o in yaml.safe_load((job / "overrides.yaml").read_text()):
        k, v = o.split("=", 1)
        if k in keys:
            out[k] = yaml.safe_load(v)
    return out


@pytest.fixture
def told(monkeypatch):
    """Every (trial number, values, state) the Optuna sweeper tells its study."""
    import optuna

    seen: list[tuple[int, list[float] | None, str]] = []
    orig = optuna.study.Study.tell

    def tell(self, trial, values=None, state=None, **kw):
        seen.append((trial.number, None if values is None else [float(v) for v in values], state.name))
        return orig(self, trial, values=values, state=state, **kw)

    monkeypatch.setattr(optuna.study.Study, "tell", tell)
    return seen


def _fail_calls(monkeypatch, raise_at: set[int] = frozenset(), nan_at: set[int] = frozenset()) -> None:
    """Trainer.fit raises on the given calls (0-based) and reports no selection score (as a diverged
    run would) on others."""
    orig = trainer_mod.Trainer.fit
    calls = {"n": 0}

    def fit(self):
        n = calls["n"]
        calls["n"] += 1
        if n in raise_at:
            raise RuntimeError(f"simulated crash in trial {n}")
        summary = orig(self)
        if n in nan_at:
            summary = dict(summary, objective=dict(summary["objective"], value=None))
            summary["val_selected"] = {t: {m: math.nan for m in ms} for t, ms in summary["val_selected"].items()}
        return summary

    monkeypatch.setattr(trainer_mod.Trainer, "fit", fit)


SEARCHED = ("optimizer.lr", "optimizer.weight_decay", "weighting")


@needs_optuna
def test_optuna_sweep_reports_the_best_job(tmp_path, capsys, told):
    sweep = tmp_path / "sweep"
    code, err = _main(
        ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", *FAST], capsys
    )
    assert code == 0, err
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2"]
    summaries = [_summary(j) for j in jobs]
    # each trial returned its selection score: shape/accuracy (the config's monitor) at the selected epoch
    for job, s in zip(jobs, summaries):
        assert s["objective"]["monitor"] == "shape/accuracy"
        assert not (job / "tensorboard").exists()  # logger.tensorboard is off by default
        assert s["objective"]["value"] == s["val_selected"]["shape"]["accuracy"]
    assert told == [(i, [s["objective"]["value"]], "COMPLETE") for i, s in enumerate(summaries)]
    # three different points of the search space, each inside its bounds
    params = [_params(j, SEARCHED) for j in jobs]
    assert len({tuple(sorted(p.items())) for p in params}) == 3
    for p in params:
        assert 1e-4 <= p["optimizer.lr"] <= 1e-2 and 1e-6 <= p["optimizer.weight_decay"] <= 1e-1
        assert p["weighting"] in ("static", "uw", "dwa", "famo")
        assert set(p) == set(SEARCHED)
    # the study's result is the best job's value and parameters (the first one on a tie, as Optuna)
    values = [s["objective"]["value"] for s in summaries]
    best = values.index(max(values))
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["best_value"] == values[best]
    assert res["best_params"] == params[best]


@needs_optuna
def test_failed_and_nan_trials_rank_worst_and_the_study_goes_on(tmp_path, capsys, monkeypatch, told):
    _fail_calls(monkeypatch, raise_at={1}, nan_at={2})
    sweep = tmp_path / "sweep"
    code, err = _main(
        ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", *FAST], capsys
    )
    assert code == 1  # a job failed: the sweep ran to its end, then says so
    assert "1 job(s) of the sweep failed" in err and f"{sweep / '1'}: RuntimeError: simulated crash in trial 1" in err
    good = _summary(sweep / "0")["objective"]["value"]
    # Optuna got the worst value (-inf, maximizing) instead of NaN, which would have crashed the study
    assert told == [(0, [good], "COMPLETE"), (1, [-math.inf], "COMPLETE"), (2, [-math.inf], "COMPLETE")]
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["best_value"] == good and res["best_params"] == _params(sweep / "0", SEARCHED)
    # and each job's log says why
    log1 = (sweep / "1" / "train.log").read_text()
    assert "the run failed (RuntimeError: simulated crash in trial 1)" in log1
    assert "the sweeper is told [-inf] (the worst value for direction maximize)" in log1
    log2 = (sweep / "2" / "train.log").read_text()
    assert "the run has no finite selection score (diverged?)" in log2 and "told [-inf]" in log2
    assert json.loads((sweep / "1" / "error.json").read_text())["message"] == "simulated crash in trial 1"


def _pareto(points: list[tuple[float, float]]) -> set[tuple[float, float]]:
    """Non-dominated points of (maximize, minimize) pairs."""

    def dominates(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    return {p for p in points if not any(dominates(q, p) for q in points)}


@pytest.mark.slow
@needs_optuna
def test_multi_objective_returns_each_tasks_val_metric(tmp_path, capsys, monkeypatch, told):
    _fail_calls(monkeypatch, raise_at={1})
    sweep = tmp_path / "sweep"
    code, err = _main(
        [
            "-m",
            "hparams_search=optuna_multi",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep}",
            "objectives=[shape/accuracy,size/mae]",
            "hydra.sweeper.direction=[maximize,minimize]",
            *FAST,
        ],
        capsys,
    )
    assert code == 1 and f"{sweep / '1'}: RuntimeError: simulated crash in trial 1" in err
    jobs = _jobs(sweep)
    points = {}
    for i in (0, 2):  # the val metrics at the selected epoch, in the order of `objectives`
        v = _summary(jobs[i])["val_selected"]
        points[i] = (v["shape"]["accuracy"], v["size"]["mae"])
        assert told[i] == (i, list(points[i]), "COMPLETE")
    assert told[1] == (1, [-math.inf, math.inf], "COMPLETE")  # each metric's worst value
    assert "the sweeper is told [-inf, inf]" in (sweep / "1" / "train.log").read_text()
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    front = {tuple(s["values"]) for s in res["solutions"]}
    assert front == _pareto(list(points.values()))  # the failed trial is not on it
    for s in res["solutions"]:  # each solution's parameters are those of a job with its values
        (i,) = [i for i, p in points.items() if p == tuple(s["values"])]
        assert s["params"] == _params(jobs[i], SEARCHED)


def _study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def _two_sweeps(tmp_path, capsys, search: list[str], name: str) -> tuple[str, list[Path]]:
    """Two sweeps of 2 trials into one SQLite study (the second with another sampler seed, so that
    its first trials are not the first sweep's again); (storage URL, the jobs of both, in order)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    jobs = []
    for n, seed in (("first", 0), ("second", 1)):
        sweep = tmp_path / n
        code, err = _main(
            ["-m", *search, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
            + [f"hydra.sweeper.study_name={name}", f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={sweep}"]
            + FAST,
            capsys,
        )
        assert code == 0, err
        jobs += _jobs(sweep)
    return storage, jobs


@pytest.mark.slow
@needs_optuna
def test_a_study_in_sqlite_is_continued_by_the_next_sweep(tmp_path, capsys):
    """hydra.sweeper.storage keeps the study: a second sweep with the same study_name continues
    its trial count and its history, and reports the best trial of both sweeps."""
    storage, jobs = _two_sweeps(tmp_path, capsys, ["hparams_search=optuna"], "mine")
    study = _study(storage, "mine")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    values = [_summary(j)["objective"]["value"] for j in jobs]
    assert [t.value for t in study.trials] == values  # trials 2 and 3 are the second sweep's jobs 0 and 1
    assert [t.params for t in study.trials] == [_params(j, SEARCHED) for j in jobs]
    res = yaml.safe_load((tmp_path / "second" / "optimization_results.yaml").read_text())
    assert res["best_value"] == max(values) == study.best_value  # over both sweeps


@pytest.mark.slow
@needs_optuna
def test_a_multi_objective_study_in_sqlite_is_continued_too(tmp_path, capsys):
    search = ["hparams_search=optuna_multi", "objectives=[shape/accuracy,size/mae]"]
    search.append("hydra.sweeper.direction=[maximize,minimize]")
    storage, jobs = _two_sweeps(tmp_path, capsys, search, "pareto")
    study = _study(storage, "pareto")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    points = []
    for job in jobs:
        v = _summary(job)["val_selected"]
        points.append((v["shape"]["accuracy"], v["size"]["mae"]))
    assert [tuple(t.values) for t in study.trials] == points
    res = yaml.safe_load((tmp_path / "second" / "optimization_results.yaml").read_text())
    assert {tuple(s["values"]) for s in res["solutions"]} == _pareto(points)  # the front of both sweeps


@needs_optuna
def test_sweeper_direction_and_monitor_are_checked_before_the_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_hydra_task", lambda: pytest.fail("the sweep started"))
    code, err = _main(["-m", "hparams_search=optuna", "trainer.monitor=mean_rel", *FAST], capsys)
    assert code == 2 and "trainer.monitor: mean_rel measures each run against its own first evaluation" in err
    assert "Traceback" not in err
    code, err = _main(["-m", "hparams_search=optuna", "hydra.sweeper.direction=minimize", *FAST], capsys)
    assert code == 2 and "hydra.sweeper.direction: does not match what the jobs return" in err
    assert "got 'minimize'" in err and "fix: set hydra.sweeper.direction=maximize" in err
    code, err = _main(["-m", "hparams_search=optuna_multi", "objectives=[size/mae,shape/f1]", *FAST], capsys)
    assert code == 2 and "got ['maximize', 'minimize', 'maximize', 'maximize']" in err
    assert "allowed: [minimize,maximize]" in err and "fix: set hydra.sweeper.direction=[minimize,maximize]" in err
    code, err = _main(["hparams_search=optuna", *FAST], capsys)
    assert code == 2 and "hparams_search: a hyperparameter search is a sweep: it needs --multirun" in err
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_objectives_are_validated():
    with pytest.raises(ConfigError) as e:
        validate(compose([*FAST, "objectives=[shape/acc,size/mae,size/mae]"]))
    text = e.value.render()
    assert "objectives[0]: not a metric of an enabled task (got 'shape/acc')" in text
    assert "allowed: shape/accuracy, shape/f1, size/mae, size/rmse, size/r2, present/accuracy, present/f1" in text
    assert "objectives[2]: given twice (got 'size/mae')" in text
    with pytest.raises(ConfigError) as e:
        validate(compose([*FAST, "objectives=[]"]))
    assert "objectives: an empty list" in e.value.render()
    assert validate(compose([*FAST, "objectives=[size/mae]"])).cfg["objectives"] == ["size/mae"]


def test_a_missing_plugin_names_the_extra(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_hydra_task", lambda: pytest.fail("the sweep started"))
    monkeypatch.setitem(cli.PLUGINS, "joblib", ("hydra_plugins.no_such_launcher", "joblib", "the joblib launcher"))
    monkeypatch.setitem(cli.PLUGINS, "optuna", ("no_such_package.sweeper", "optuna", "the Optuna sweeper"))
    code, err = _main(["-m", "launcher=joblib", "hparams_search=optuna", "seed=0,1"], capsys)
    assert code == 2 and "Config error: 2 problems found" in err
    assert "launcher: launcher=joblib needs the joblib launcher, which is not installed" in err
    assert "hparams_search: hparams_search=optuna needs the Optuna sweeper, which is not installed" in err
    assert 'fix: pip install "mtl-cli[joblib]"' in err and 'fix: pip install "mtl-cli[optuna]"' in err
    code, err = _main(["-m", "hydra/launcher=joblib", "seed=0,1"], capsys)
    assert code == 2 and "hydra/launcher=joblib needs the joblib launcher" in err


def test_failed_jobs_are_found_by_their_error_json(tmp_path):
    """What the end of a sweep reads when jobs ran in other processes: error.json of this sweep."""
    import os

    old, new = tmp_path / "0", tmp_path / "1"
    for d, err in (
        (old, {"type": "RuntimeError", "message": "from an earlier sweep"}),
        (new, {"type": "TrainingError", "message": "Training stopped: 1 problem found\n  - step 2"}),
    ):
        d.mkdir()
        (d / "error.json").write_text(json.dumps(err))
    os.utime(old / "error.json", (1000.0, 1000.0))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "error.json").write_text(json.dumps({"type": "ValueError", "message": "bad\nmore"}))
    found = cli.failed_jobs(tmp_path, since=2000.0)
    assert found == [(str(new), "Training stopped: step 2"), (str(tmp_path / "2"), "ValueError: bad")]
    titled = "Config error: 2 problems found\n  - a: bad (got 1)\n      fix: x\n  - b: worse"
    assert cli.headline("ConfigError", titled) == "Config error: a: bad (got 1) (and 1 more)"


@pytest.mark.slow
def test_the_end_of_a_sweep_finds_failed_jobs_on_disk(tmp_path, capsys, monkeypatch):
    """As when jobs run in other processes: nothing is recorded in this one, the failed job is found
    by its error.json in the sweep directory (the default, timestamped one)."""

    class _Forgetful(list):
        def append(self, item):  # a job in another process cannot append to this process's list
            pass

    monkeypatch.setattr(cli, "FAILED_JOBS", _Forgetful())
    _fail_calls(monkeypatch, raise_at={1})
    code, err = _main(["-m", "seed=0,1", *FAST], capsys)
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert code == 1 and cli.SWEEP["dir"] == str(sweep.relative_to(tmp_path))
    assert err.endswith(
        f"1 job(s) of the sweep failed (error.json and train.log in each):\n"
        f"  - {sweep / '1'}: RuntimeError: simulated crash in trial 1\n"
    )
    assert (sweep / "0" / "summary.json").is_file()


# ---------------------------------------------------------------- launchers with worker processes
# a job that stops at its second step: non-finite loss under trainer.on_nonfinite=stop
DIVERGING_LR = "1e30"


@pytest.mark.slow
@needs_joblib
def test_joblib_runs_jobs_in_parallel_and_reports_a_failed_one(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    code, err = _main(
        [
            "-m",
            "launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}",
            f"optimizer.lr=0.003,0.001,{DIVERGING_LR}",
            "trainer.on_nonfinite=stop",
            *FAST,
        ],
        capsys,
    )
    assert code == 1
    assert cli.FAILED_JOBS == []  # the jobs ran in joblib's worker processes: found by their error.json
    assert "1 job(s) of the sweep failed" in err
    assert f"{sweep / '2'}: Training stopped: step 2 (epoch 1): non-finite loss" in err
    for n, lr in (("0", 0.003), ("1", 0.001)):
        s = _summary(sweep / n)
        assert s["steps"] == 4 and s["objective"]["value"] is not None
        assert yaml.safe_load((sweep / n / "config.yaml").read_text())["optimizer"]["lr"] == lr
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # the idle workers would hold memory for the rest of the suite
    err2 = json.loads((sweep / "2" / "error.json").read_text())
    assert err2["type"] == "TrainingError" and "non-finite loss" in err2["message"]
    assert not (sweep / "2" / "summary.json").exists()


@pytest.mark.slow
@needs_submitit
def test_submitit_local_runs_the_jobs_and_reports_a_failed_one(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    code, err = _main(
        [
            "-m",
            "launcher=submitit_local",
            f"hydra.sweep.dir={sweep}",
            "hydra.launcher.timeout_min=10",
            f"optimizer.lr=0.003,{DIVERGING_LR}",
            "trainer.on_nonfinite=stop",
            *FAST,
        ],
        capsys,
    )
    assert code == 1 and cli.FAILED_JOBS == []
    assert f"{sweep / '1'}: Training stopped: step 2 (epoch 1): non-finite loss" in err
    assert _summary(sweep / "0")["steps"] == 4
    assert json.loads((sweep / "1" / "error.json").read_text())["type"] == "TrainingError"
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # each job ran as a submitit job, with its own log


@needs_submitit
def test_slurm_config_gives_a_valid_sbatch_script(monkeypatch, tmp_path):
    """launcher=slurm's keys are options submitit knows, and become these sbatch lines (no cluster
    needed: the executor is stopped before it submits)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were there
    executors = []
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda self, fn, *a: executors.append(self) or [])
    cfg = compose(
        [
            "launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.account=proj7",
            "hydra.launcher.setup=[module load cuda]",
            f"hydra.sweep.dir={tmp_path}",
        ],
        return_hydra_config=True,
    )
    launcher = SlurmLauncher(**{k: v for k, v in cfg.hydra.launcher.items() if k != "_target_"})
    launcher.config = cfg
    assert launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0) == []
    (ex,) = executors
    text = ex._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in (
        "--partition=gpu",
        "--account=proj7",
        "--time=240",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32GB",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--job-name=train",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}\n" in text, line
    assert "\nmodule load cuda\n" in text
    assert f"{tmp_path}/.submitit/%j/%j_0_log.out" in text
    assert ex._executor.max_num_timeout == 3 and ex._executor.parameters["array_parallelism"] == 16
