"""The Python API (``from mtl_cli import compose, train, evaluate, predict``) gives what the
commands give: the same config errors, the same run directory and summary as mtl-train with the
same overrides, the metrics mtl-eval writes and the records mtl-predict writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_resume import BASE

import mtl_cli.cli.evaluate as ev
import mtl_cli.cli.predict as pr
import mtl_cli.cli.train as cli
from mtl_cli import TrainResult, compose, evaluate, predict, train
from mtl_cli.config.locate import ENV
from mtl_cli.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "examples" / "images"

#: test_resume's tiny runs (MLP backbone, 16x16 shapes), 2 epochs of 4 steps: a few seconds each
TINY = [*BASE, "trainer.max_epochs=2"]


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_importing_the_api_loads_neither_torch_nor_hydra():
    code = (
        "import sys; from mtl_cli import compose, train, evaluate, predict, TrainResult; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hydra', 'omegaconf', 'numpy'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_train_is_callable_and_still_the_training_package():
    import mtl_cli
    import mtl_cli.train.trainer as trainer_mod

    assert callable(train) and train is mtl_cli.train
    assert trainer_mod is sys.modules["mtl_cli.train.trainer"] and mtl_cli.train.trainer is trainer_mod


def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip()


def test_config_errors_are_mtl_trains(capsys):
    """A misspelt key, an unknown option and a target the data lacks: one ConfigError naming each,
    with the text mtl-train prints."""
    argv = ["trainer.max_epoch=3", "tasks.shape.target=colour", "arch=mmeo"]
    with pytest.raises(ConfigError) as exc:
        compose(argv)
    keys = [p.key for p in exc.value.problems]
    assert keys == ["arch", "trainer.max_epoch", "tasks.shape.target"]
    bad_key = exc.value.problems[1]
    assert bad_key.message == "no such key in the config" and bad_key.value == "trainer.max_epoch=3"
    assert "did you mean trainer.max_epochs" in bad_key.allowed
    assert exc.value.render() == _cli_error(argv, capsys)


def test_a_value_out_of_its_domain_is_refused_as_by_mtl_train(capsys):
    with pytest.raises(ConfigError) as exc:
        compose(["trainer.batch_size=0"])
    assert [p.key for p in exc.value.problems] == ["trainer.batch_size"]
    assert exc.value.render() == _cli_error(["trainer.batch_size=0"], capsys)


def test_flags_and_sweeps_are_not_overrides():
    with pytest.raises(ConfigError) as exc:
        compose(["-m", "seed=0,1"])
    assert [p.key for p in exc.value.problems] == ["-m"]
    with pytest.raises(ConfigError) as exc:
        compose(["seed=0,1"])
    assert "several values (a sweep) need --multirun" in exc.value.render()
    with pytest.raises(TypeError):
        compose("seed=1")  # type: ignore[arg-type]


def test_config_dir_is_searched_first(tmp_path):
    mine = tmp_path / "my_conf" / "optimizer"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("_target_: torch.optim.SGD\nlr: 0.125\n")
    cfg = compose(["optimizer=mine"], config_dir=tmp_path / "my_conf")
    assert cfg.optimizer.lr == 0.125
    with pytest.raises(UserError, match="directory not found"):
        compose([], config_dir=tmp_path / "nowhere")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same overrides trained by mtl-train (in this process) and by the API."""
    root = tmp_path_factory.mktemp("api")
    old = os.getcwd()
    os.chdir(root)
    try:
        cli.main([*TINY, "run_dir=cli_run"])
        result = train(compose([*TINY, "run_dir=api_run"]))
    finally:
        os.chdir(old)
    return root / "cli_run", result


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def _yaml(path: Path, run_dir: str):
    return yaml.safe_load(path.read_text().replace(run_dir, "<run>"))


@pytest.mark.slow
def test_train_writes_the_run_directory_and_summary_of_mtl_train(runs):
    cli_run, result = runs
    assert isinstance(result, TrainResult) and result.run_dir == cli_run.parent / "api_run"
    assert os.fspath(result) == str(result.run_dir)
    a = json.loads((cli_run / "summary.json").read_text())
    b = json.loads((result.run_dir / "summary.json").read_text())
    assert b == result.summary
    for key in ("test", "val_selected", "val_final", "objective", "selected_epoch", "steps", "parameters"):
        assert a[key] == b[key], key
    assert result.test == a["test"] and result.val == a["val_selected"] and result.objective == a["objective"]["value"]
    assert set(result.test) == {"shape", "size", "present"} and 0 <= result.test["shape"]["accuracy"] <= 1
    assert _files(cli_run) == _files(result.run_dir)
    for name in ("config.yaml", "overrides.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert _yaml(cli_run / name, "cli_run") == _yaml(result.run_dir / name, "api_run"), name
    hydra_a = _yaml(cli_run / ".hydra" / "hydra.yaml", "cli_run")["hydra"]
    hydra_b = _yaml(result.run_dir / ".hydra" / "hydra.yaml", "api_run")["hydra"]
    for key in ("runtime", "mode", "overrides", "job", "run"):
        assert hydra_a[key] == hydra_b[key], key
    metrics_a = [
        {k: v for k, v in json.loads(x).items() if "time" not in k and "per_s" not in k}
        for x in (cli_run / "metrics.jsonl").read_text().splitlines()
    ]
    metrics_b = [
        {k: v for k, v in json.loads(x).items() if "time" not in k and "per_s" not in k}
        for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics_a == metrics_b


@pytest.mark.slow
def test_evaluate_returns_what_mtl_eval_writes(runs, capsys):
    _, result = runs
    for split, checkpoint in (("test", "best"), ("val", "last")):
        ev.main([str(result.run_dir), f"split={split}", f"checkpoint={checkpoint}"])
        out = capsys.readouterr().out
        written = json.loads(Path(out.strip().splitlines()[-1].split("written to ", 1)[1]).read_text())
        got = evaluate(result, split=split, checkpoint=checkpoint, save=False)
        assert got == written
    assert evaluate(result)["metrics"] == result.test  # the run's own test, at best.pt
    other = evaluate(result, overrides=["data.seed=7"], limit=1)
    assert Path(other["file"]).is_file() and json.loads(Path(other["file"]).read_text())["overrides"] == ["data.seed=7"]
    assert other["metrics"] != result.test and other["limit"] == 1
    with pytest.raises(ConfigError) as exc:
        evaluate(result, split="tset")
    assert [p.key for p in exc.value.problems] == ["split"]
    with pytest.raises(ConfigError) as exc:
        evaluate(result, overrides=["optimizer.lr=1"])
    assert [p.key for p in exc.value.problems] == ["optimizer.lr"]


def _close(a, b, rel: float = 1e-5) -> bool:
    """Equal nested records, floats within ``rel`` (or 1e-6)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=rel, abs=1e-6)
    return a == b


@pytest.mark.slow
def test_predict_returns_what_mtl_predict_writes(runs, tmp_path, capsys):
    _, result = runs
    # the example images are 32x32, the run's 16x16: resized, as mtl-predict does with resize=true
    pr.main([str(result.run_dir), f"input={IMAGES}", f"output={tmp_path / 'p.jsonl'}", "resize=true"])
    capsys.readouterr()
    written = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    got = predict(result, IMAGES, resize=True)
    assert len(got) == 4 and json.loads(json.dumps(got)) == written
    assert [Path(r["input"]).name for r in got] == [f"shape_{i}.png" for i in range(4)]
    assert set(got[0]) == {"input", "shape", "size", "present"} and 0 <= got[0]["shape"]["index"] < 4
    both = predict(result, [IMAGES / "shape_0.png", IMAGES / "shape_1.png"], output=tmp_path / "two.csv", resize=True)
    # a batch of 2 may run other CPU kernels than a batch of 4: the same labels, scores to float noise
    assert _close(both, got[:2]) and len((tmp_path / "two.csv").read_text().splitlines()) == 3
    with pytest.raises(ConfigError) as exc:
        predict(result, IMAGES, output=tmp_path / "p.txt", resize="sometimes")
    assert [p.key for p in exc.value.problems] == ["output", "resize"]


@pytest.mark.slow
def test_a_run_directory_holding_a_run_is_refused_as_by_mtl_train(runs, capsys):
    cli_run, result = runs
    with pytest.raises(UserError) as exc:
        train(compose([*TINY, f"run_dir={result.run_dir}"]))
    assert exc.value.render() == _cli_error([*TINY, f"run_dir={cli_run}"], capsys).replace(
        str(cli_run), str(result.run_dir)
    )


@pytest.mark.slow
def test_a_changed_config_trains_with_a_warning_and_no_overrides(tmp_path):
    cfg = compose([*TINY, "trainer.max_epochs=1"])
    cfg.trainer.limit_train_batches = 1
    with pytest.warns(UserWarning, match="changed since"):
        result = train(cfg, tmp_path / "changed")
    assert result.summary["steps"] == 1
    assert not (tmp_path / "changed" / "overrides.yaml").exists() and (tmp_path / "changed" / "summary.json").is_file()
