"""A run directory from elsewhere is data, never code: what a resume replays, what mtl-eval,
mtl-predict and mtl-report read, and what the command line may hold (issue 12, items 1, 3, 5, 10).

Each case would have run code, touched a file, hung or ended in a traceback before."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml
from test_resume import BASE

import mtl_cli.cli.evaluate as ev
import mtl_cli.cli.report as rp
import mtl_cli.cli.train as cli
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.config.untrusted import MAX_DEPTH, UntrustedYAMLError, load_untrusted_yaml, nesting_depth
from mtl_cli.train.api import train

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
)  # 10^10 strings once expanded
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trust") / "run"
    train(compose(BASE + ["trainer.max_epochs=1"]), d, ["trainer.max_epochs=1"])
    return d


def _copy_run(src: Path, dst: Path) -> Path:
    (dst / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "overrides.yaml", "summary.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    for name in ("best.pt", "last.pt"):
        (dst / "checkpoints" / name).write_bytes((src / "checkpoints" / name).read_bytes())
    return dst


def _mtl_train(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    def _hydra_task():
        pytest.fail("the checks accepted a hostile run directory; Hydra would have started the run")

    monkeypatch.setattr(cli, "_hydra_task", _hydra_task)
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


# ------------------------------------------------------------------ (1) resume replays overrides only
class Marker:
    """A pickle that would create a file when loaded (what --experimental-rerun unpickles)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


@pytest.mark.parametrize(
    "line",
    [
        "--experimental-rerun={pickle}",
        "--config-dir={tmp}/evil_conf",
        "--config-name=evil",
        "-cd={tmp}/evil_conf",
        "hydra.callbacks.x._target_=pathlib.Path.write_text",
        "+hydra.job_logging.root.level=DEBUG",
        "hydra/launcher=joblib",
        "trainer.max_epochs=1,2",
        "not an override",
    ],
)
def test_resume_refuses_an_overrides_file_mtl_train_did_not_write(line, finished_run, tmp_path, capsys, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    pkl = tmp_path / "rerun.pickle"
    marker = tmp_path / "marker.txt"
    pkl.write_bytes(pickle.dumps(Marker(marker)))
    saved = yaml.safe_load((run / "overrides.yaml").read_text())
    entry = line.format(pickle=pkl, tmp=tmp_path)
    (run / "overrides.yaml").write_text(yaml.safe_dump([*saved, entry]))
    code, err = _mtl_train([f"resume={run}"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert "overrides.yaml: entry 2" in err and "not one mtl-train wrote" in err
    assert not marker.exists()


@pytest.mark.parametrize("text", [123, {"a": 1}, BOMB, DEEP])
def test_resume_refuses_overrides_that_are_not_a_list_of_lines(text, finished_run, tmp_path, capsys, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "overrides.yaml").write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    code, err = _mtl_train([f"resume={run}"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and "overrides.yaml" in err


def test_resume_replays_the_runs_own_overrides(finished_run, tmp_path):
    run = _copy_run(finished_run, tmp_path / "run")
    argv = cli.replay_resume([f"resume={run}", "trainer.max_epochs=2"])
    assert argv == ["trainer.max_epochs=1", f"resume={run}", "trainer.max_epochs=2", f"run_dir={run}"]


# ------------------------------------------------------------------ (3) targets of the right kind only
@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["optimizer._target_=torchvision.utils.save_image", "+optimizer.fp={victim}", "+optimizer.format=png"],
            ["optimizer._target_", "not an optimizer class", "torchvision.utils.save_image"],
        ),
        (
            ["scheduler._target_=torchvision.utils.save_image", "+scheduler.fp={victim}"],
            ["scheduler._target_", "not a learning-rate scheduler class"],
        ),
        (["optimizer._target_=torch.optim.LBFGS"], ["optimizer._target_", "needs a closure"]),
    ],
)
def test_targets_must_be_classes_of_their_kind(argv, words, tmp_path, capsys, monkeypatch):
    victim = tmp_path / "victim.png"
    victim.write_text("keep me")
    code, err = _mtl_train([a.format(victim=victim) for a in argv], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    for w in words:
        assert w in err, err
    assert victim.read_text() == "keep me"


def test_resume_with_a_hostile_optimizer_override_touches_nothing(finished_run, tmp_path, capsys, monkeypatch):
    run = _copy_run(finished_run, tmp_path / "run")
    victim = tmp_path / "victim.png"
    victim.write_text("keep me")
    lines = ["optimizer._target_=torchvision.utils.save_image", f"+optimizer.fp={victim}", "+optimizer.format=png"]
    (run / "overrides.yaml").write_text(yaml.safe_dump(lines))
    code, err = _mtl_train([f"resume={run}"], capsys, monkeypatch)
    assert code == 2 and "not an optimizer class" in err
    assert victim.read_text() == "keep me"


def test_evaluation_never_imports_or_calls_the_optimizer(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "run")
    victim = tmp_path / "victim.png"
    victim.write_text("keep me")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["optimizer"] = {"_target_": "torchvision.utils.save_image", "fp": str(victim), "format": "png"}
    cfg["scheduler"] = {"_target_": "torchvision.utils.save_image", "fp": str(victim)}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    ev.main([str(run)])
    assert "written to" in capsys.readouterr().out
    assert victim.read_text() == "keep me"


# ------------------------------------------------------------------ (5) bounded YAML
@pytest.mark.parametrize("text, words", [(BOMB, "alias"), (DEEP, "nested more than"), ("a: [b", "not valid YAML")])
def test_untrusted_yaml_refuses_bombs_depth_and_garbage(text, words):
    with pytest.raises(UntrustedYAMLError, match=words):
        load_untrusted_yaml(text)


def test_untrusted_yaml_reads_plain_configs():
    assert load_untrusted_yaml("a: 1\nb: [x, {c: 2}]\n") == {"a": 1, "b": ["x", {"c": 2}]}
    assert load_untrusted_yaml(b"- x=1\n") == ["x=1"]
    with pytest.raises(UntrustedYAMLError, match="more than"):
        load_untrusted_yaml("x" * (2 << 20))
    nested = "a:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(MAX_DEPTH + 2))
    with pytest.raises(UntrustedYAMLError, match="nested"):
        load_untrusted_yaml(nested)


@pytest.mark.parametrize("text", [BOMB, DEEP])
def test_eval_and_report_refuse_hostile_config_yaml(text, finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path / "runs" / "bad")
    (run / "config.yaml").write_text(text)
    with pytest.raises(SystemExit) as e:
        ev.main([str(run)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "config.yaml" in err and "Traceback" not in err
    rp.main([str(tmp_path / "runs")])  # the report goes on: the run has no config it can read
    out = capsys.readouterr()
    assert "Traceback" not in out.err


def test_command_line_values_nested_too_deep_are_refused(capsys, monkeypatch):
    code, err = _mtl_train([f"+x={DEEP}"], capsys, monkeypatch)
    assert code == 2 and "nested 5000 levels deep" in err and "Traceback" not in err
    assert nesting_depth("a=[1, '[[[', {b: [2]}]") == 3  # brackets in quotes do not count


def test_eval_overrides_nested_too_deep_are_refused(finished_run, capsys):
    with pytest.raises(SystemExit) as e:
        ev.main([str(finished_run), f"data.missing_labels={DEEP}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nested too deeply" in err and "Traceback" not in err


# ------------------------------------------------------------------ (10) values that would hang or crash
@pytest.mark.parametrize(
    "argv, words",
    [
        (["trainer.num_workers=100000"], ["trainer.num_workers", "(got 100000)", "4 per CPU core"]),
        (["data.max_objects=1000000"], ["data.max_objects", "(got 1000000)", "<= 32"]),
        (["data.image_size=100000"], ["data: the data needs about", "GiB of memory", "data.image_size"]),
        (["data.train_size=100000000"], ["data: the data needs about", "data.train_size"]),
        (["experiment=tones", "data.length=100000000"], ["the data needs about", "GiB"]),
        (["optimizer.lr=inf", "scheduler=constant"], ["optimizer.lr", "finite number > 0", "(got inf)"]),
        (["scheduler.warmup_start_factor=abc"], ["scheduler.warmup_start_factor", "(got 'abc')"]),
        (["optimizer._target_=torch.optim.LBFGS"], ["needs a closure"]),
    ],
)
def test_values_that_would_hang_or_crash_are_refused(argv, words, capsys, monkeypatch, tmp_path):
    code, err = _mtl_train(argv, capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "outputs").exists()


def test_memory_estimates_grow_with_the_sizes():
    from mtl_cli.data.sources.shapes import ShapesSource
    from mtl_cli.data.sources.tones import TonesSource

    small, big = ShapesSource(image_size=16), ShapesSource(image_size=32)
    assert big.estimated_bytes() == 4 * small.estimated_bytes()
    assert TonesSource(train_size=4000).estimated_bytes() > TonesSource().estimated_bytes()
    # the default experiment needs far less than a gigabyte
    assert ShapesSource().estimated_bytes() < 2**28
    json.dumps(ShapesSource().estimated_bytes())
