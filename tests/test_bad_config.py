"""Bad command lines end with exit code 2 and a message naming the key, the value and the fix.

``mtl_cli.cli.train.main`` runs in-process; the Hydra run itself is replaced by a function that
fails the test, so a mistake the checks miss cannot start a training run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mtl_cli.cli.train as cli
from mtl_cli.config.locate import ENV
from mtl_cli.errors import ConfigError, UserError

ALL_TASKS = ("shape", "size", "present", "segmentation")

# (id, argv, words that must all appear in stderr)
CASES = [
    (
        "backbone rule with its input, under hps",
        ["experiment=tones", "backbone.n_fft=4096"],
        ["backbone.n_fft", "(got 4096)", "longer than the signal", "at most 2048"],
    ),
    (
        "a mapping's values are listed",
        ["+data.missing_labels={size: 2}"],
        ["data.missing_labels", "entry 'size'", "mapping of names to numbers >= 0 and <= 1"],
    ),
    ("unknown arch", ["arch=nope"], ["arch", "'nope'", "unknown option of config group", "allowed:", "hps"]),
    (
        "unknown backbone",
        ["backbone=nope"],
        ["backbone", "'nope'", "resnet18", "small_cnn", "fix: use backbone=<one of the allowed options>"],
    ),
    (
        "sweep with one bad option",
        ["-m", "backbone=small_cnn,nope", "debug=smoke"],
        ["backbone", "'nope'", "unknown option", "small_cnn"],
    ),
    (
        "sweep glob matching nothing",
        ["-m", "backbone=glob(nope*)"],
        ["backbone", "glob(nope*)", "selects no option", "resnet18"],
    ),
    (
        "sweep with one bad value",
        ["-m", "optimizer.lr=0.001,-1"],
        ["job 1 (optimizer.lr=-1)", "optimizer.lr", "(got -1)", "learning rate must be a finite number > 0"],
    ),
    ("sweep without -m", ["optimizer.lr=0.001,0.01"], ["optimizer.lr", "0.001,0.01", "--multirun", "fix: add -m"]),
    (
        "misspelt key",
        ["trainer.max_epoch=3"],
        ["trainer.max_epoch", "no such key", "did you mean trainer.max_epochs", "+trainer.max_epoch=3"],
    ),
    (
        "wrong type",
        ["trainer.batch_size=abc"],
        ["trainer.batch_size", "'abc'", "expected integer", "allowed: an integer >= 1"],
    ),
    ("batch size 0", ["trainer.batch_size=0"], ["trainer.batch_size", "(got 0)", "out of range", "an integer >= 1"]),
    ("negative lr", ["optimizer.lr=-1"], ["optimizer.lr", "(got -1)", "> 0", "fix: e.g. optimizer.lr=1e-3"]),
    ("negative task weight", ["tasks.shape.weight=-1"], ["tasks.shape.weight", "(got -1)", "a number >= 0"]),
    ("zero epochs", ["trainer.max_epochs=0"], ["trainer.max_epochs", "(got 0)", "an integer >= 1"]),
    ("negative seed", ["seed=-1"], ["seed: value out of range", "(got -1)", "an integer >= 0"]),
    (
        "unknown task kind",
        ["tasks.shape.kind=nope"],
        ["tasks.shape.kind", "'nope'", "unknown task kind", "classification", "segmentation"],
    ),
    (
        "missing task kind",
        ["+tasks.extra.weight=2"],
        ["tasks.extra.kind", "required key is missing", "classification", "+tasks.extra.kind=<kind>"],
    ),
    (
        "target the data lacks",
        ["tasks.shape.target=nope"],
        ["tasks.shape.target", "'nope'", "no such target", "allowed: shape, color, size"],
    ),
    (
        "unknown metric for the kind",
        ["tasks.shape.metrics=[accuracy,mae]"],
        ["tasks.shape.metrics", "'mae'", "not a metric of a classification task", "accuracy, f1, auroc"],
    ),
    (
        "metrics not a list",
        ["tasks.shape.metrics=accuracy"],
        ["tasks.shape.metrics", "'accuracy'", "expected list of string or null", "1 problem found"],
    ),
    (
        "no metrics",
        ["tasks.shape.metrics=[]"],
        ["tasks.shape.metrics", "at least one metric", "accuracy, f1, auroc", "tasks.shape.metrics=null"],
    ),
    (
        "primary metric not among metrics",
        ["tasks.shape.primary_metric=auroc"],
        ["tasks.shape.primary_metric", "'auroc'", "must be one of the task's metrics", "allowed: accuracy, f1"],
    ),
    (
        "loss not for the kind",
        ["tasks.shape.loss=mse"],
        ["tasks.shape.loss", "'mse'", "not a loss of a classification task", "allowed: cross_entropy"],
    ),
    (
        "unknown head name",
        ["+tasks.shape.head={name: nope}"],
        ["tasks.shape.head.name", "'nope'", "unknown head", "conv_decoder, linear, mlp"],
    ),
    (
        "classification task with a dense head",
        ["+tasks.shape.head={name: conv_decoder}"],
        ["tasks.shape.head", "'conv_decoder'", "needs a vector head", "allowed: linear, mlp"],
    ),
    (
        "dense task with a vector head",
        ["+tasks.segmentation.head={name: linear}"],
        ["tasks.segmentation.head", "'linear'", "needs a dense (per-pixel) head", "allowed: conv_decoder"],
    ),
    (
        "dense task on a vector backbone",
        ["backbone=mlp"],
        ["tasks.segmentation.head", "needs a spatial feature map", "backbone mlp", "convolutional backbone"],
    ),
    (
        "every task disabled",
        [f"tasks.{t}.enabled=false" for t in ALL_TASKS],
        ["tasks", "every task is disabled", "'segmentation'", "tasks.<name>.enabled=true"],
    ),
    (
        "all tasks auxiliary",
        [f"tasks.{t}.role=auxiliary" for t in ALL_TASKS],
        ["tasks.*.role", "every enabled task is auxiliary", "role=primary"],
    ),
    (
        "monitor names a missing task",
        ["trainer.monitor=nope/accuracy"],
        ["trainer.monitor", "'nope/accuracy'", "not a metric of an enabled task", "shape/accuracy", "mean_rel"],
    ),
    (
        "fp16 on cpu",
        ["trainer.precision=fp16", "device=cpu"],
        ["trainer.precision", "'fp16'", "needs a CUDA device", "trainer.precision=bf16 or 32"],
    ),
    ("unknown device", ["device=tpu"], ["device", "'tpu'", "unknown device", "auto, cpu, cuda, cuda:<i>, mps"]),
    ("unknown data key", ["data.nope=1"], ["data.nope", "no such key", "+data.nope=1"]),
    (
        "unknown data key added",
        ["+data.nope=1"],
        ["data.nope", "unknown key", "train_size", "missing_labels", "remove data.nope"],
    ),
    (
        "bad scheduler interval",
        ["scheduler.interval=hour"],
        ["scheduler.interval", "'hour'", "unknown interval", "allowed: step, epoch"],
    ),
    (
        "scheduler value torch refuses",
        ["scheduler=step", "scheduler.step_size=abc"],
        ["scheduler", "StepLR refuses these arguments", "'step_size': 'abc'"],
    ),
    (
        "bad warmup factor",
        ["scheduler.warmup_steps=5", "scheduler.warmup_start_factor=0"],
        ["scheduler.warmup_start_factor", "(got 0)", "0 < factor <= 1"],
    ),
    (
        "optimizer not importable",
        ["optimizer._target_=torch.optim.Nope"],
        ["optimizer._target_", "'torch.optim.Nope'", "cannot import", "torch.optim.AdamW"],
    ),
    (
        "unknown optimizer argument",
        ["+optimizer.foo=1"],
        ["optimizer.foo", "unknown argument of torch.optim.AdamW", "betas", "1 problem found"],
    ),
    (
        "mandatory value missing",
        ["experiment=tabular"],
        ["data.path", "fix: set data.path=", "data.targets", "tasks", "3 problems found"],
    ),
    (
        "??? left unset",
        ["+task@tasks.extra=base"],
        ["tasks.extra.kind", "mandatory value is not set", "set tasks.extra.kind=<value>", "1 problem found"],
    ),
    ("group set to null", ["backbone=null"], ["backbone", "needs an option", "small_cnn"]),
    (
        "task name shadowing a module attribute",
        ["+tasks.type={kind: classification, target: shape}"],
        ["tasks.type", "cannot be used", "attribute of torch modules", "rename the task"],
    ),
    (
        "override grammar",
        ["trainer.batch_size=["],
        ["trainer.batch_size", "cannot parse", "'trainer.batch_size=['", "key=value"],
    ),
]


@pytest.fixture(autouse=True)
def _no_run(monkeypatch, tmp_path):
    """Plain environment; a command line that passes the checks fails the test instead of training."""
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def _hydra_task():
        pytest.fail("the checks accepted a bad command line; Hydra would have started the run")

    monkeypatch.setattr(cli, "_hydra_task", _hydra_task)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out = capsys.readouterr()
    assert out.out == "", "errors go to stderr"
    return exc.value.code, out.err


def test_enough_cases():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,words", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_command_line(argv, words, capsys):
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert err.startswith(("Config error: ", "Data error: ")), err
    assert "Traceback" not in err
    assert "allowed: " in err or "fix: " in err, err
    for w in words:
        assert w in err, f"{w!r} not in:\n{err}"


def test_two_bad_values_in_one_message(capsys):
    code, err = _run(["trainer.batch_size=0", "optimizer.lr=-1"], capsys)
    assert code == 2
    assert err.splitlines()[0] == "Config error: 2 problems found"
    assert err.count("\n  - ") == 2  # one entry each
    for w in ("trainer.batch_size", "(got 0)", "optimizer.lr", "(got -1)"):
        assert w in err


def test_key_errors_and_value_errors_together(capsys):
    code, err = _run(["trainer.max_epoch=3", "trainer.batch_size=0", "backbone=nope"], capsys)
    assert code == 2
    assert "3 problems found" in err
    for w in ("backbone", "'nope'", "trainer.max_epoch", "did you mean trainer.max_epochs", "trainer.batch_size"):
        assert w in err


def test_sweep_problem_shared_by_all_jobs_is_reported_once(capsys):
    code, err = _run(["-m", "seed=0,1,2", "trainer.batch_size=0"], capsys)
    assert code == 2
    assert "1 problem found" in err
    assert "all 3 jobs: trainer.batch_size" in err


def test_unknown_config_dir(capsys, tmp_path):
    code, err = _run(["--config-dir", str(tmp_path / "nope"), "debug=smoke"], capsys)
    assert code == 2
    assert "--config-dir" in err and str(tmp_path / "nope") in err


def test_duplicate_task_name_in_a_config_file(capsys, tmp_path):
    (tmp_path / "conf" / "tasks").mkdir(parents=True)
    (tmp_path / "conf" / "tasks" / "dup.yaml").write_text(
        "shape:\n  kind: classification\nsize:\n  kind: regression\nshape:\n  kind: classification\n"
    )
    code, err = _run(["--config-dir", str(tmp_path / "conf"), "tasks=dup"], capsys)
    assert code == 2 and "1 problem found" in err and "Traceback" not in err
    assert f"{tmp_path / 'conf' / 'tasks' / 'dup.yaml'}, line 5" in err
    assert "found duplicate key shape" in err and "task names, like all keys of a mapping, must be unique" in err


def test_no_problem_no_exit(monkeypatch):
    """A good command line reaches Hydra (here: the stand-in), with the overrides as sys.argv."""
    called = []
    monkeypatch.setattr(cli, "_hydra_task", lambda: called.append(list(cli.sys.argv[1:])))
    monkeypatch.setattr(cli.sys, "argv", ["mtl-train"])
    cli.main(["debug=smoke", "optimizer.lr=0.01"])
    assert called == [["debug=smoke", "optimizer.lr=0.01"]]


@pytest.mark.parametrize("var", ["MTL_DEBUG", "HYDRA_FULL_ERROR"])
def test_debug_shows_the_traceback(var, monkeypatch, capsys):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError) as err:  # the exception itself, not SystemExit(2)
        cli.main(["trainer.batch_size=0"])
    assert isinstance(err.value, UserError) and err.value.exit_code == 2
    assert "trainer.batch_size" in str(err.value)
    assert err.value.problems[0].key == "trainer.batch_size" and err.value.problems[0].value == 0


@pytest.mark.parametrize("value", ["0", "", "false"])
def test_debug_switch_off_values(value, monkeypatch, capsys):
    monkeypatch.setenv("MTL_DEBUG", value)
    monkeypatch.setenv("HYDRA_FULL_ERROR", value)
    code, err = _run(["trainer.batch_size=0"], capsys)
    assert code == 2 and "trainer.batch_size" in err


def test_readme_error_example_is_current(capsys):
    """The error shown in README.md is what mtl-train prints for that command line."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(r"^\$ mtl-train (.+)\n((?:Config error:.*\n)(?:  .*\n)+)\$ echo \$\?\n(\d+)", readme, re.M)
    assert match, "README.md lost its config error example"
    argv, shown, code_shown = match.group(1).split(), match.group(2), int(match.group(3))
    code, err = _run(argv, capsys)
    assert (code, err) == (code_shown, shown)
