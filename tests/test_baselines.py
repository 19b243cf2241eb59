"""Single-task baselines (baseline=stl) and Δm: the baseline runs, baselines.json, Δm in a
multi-task run's summary (checked against a hand computation from the files), model selection by
Δm, the pure function on hand-made numbers, and the validation of baseline_dir."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_resume import BASE, records

import mtl_cli.cli.train as cli
import mtl_cli.train.trainer as trainer_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.errors import ConfigError
from mtl_cli.results.baselines import setting_differences, shared_settings
from mtl_cli.results.delta_m import delta_m
from mtl_cli.train.api import train

# shape (classification) and size (regression); last.pt at epoch ends only
TWO = BASE + ["tasks.present.enabled=false", "trainer.checkpoint_every=null"]
NAN = float("nan")


def _clean_env(mp: pytest.MonkeyPatch) -> None:
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        mp.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def stl(tmp_path_factory):
    """baseline=stl through the CLI. The parent asks for arch=mmoe and a task weight of 3: the
    single-task runs must use hps and ew regardless."""
    d = tmp_path_factory.mktemp("stl") / "base"
    mp = pytest.MonkeyPatch()
    _clean_env(mp)
    try:
        cli.main(TWO + ["baseline=stl", "arch=mmoe", "tasks.size.weight=3", f"run_dir={d}"])
    finally:
        mp.undo()
    return d


@pytest.fixture(scope="module")
def mtl(stl, tmp_path_factory):
    """A multi-task run with the same settings, pointed at the baselines."""
    d = tmp_path_factory.mktemp("mtl") / "run"
    train(compose(TWO + [f"baseline_dir={stl}"]), d)
    return d


# ---------------------------------------------------------------- baseline=stl
def test_stl_trains_one_normal_run_per_task(stl):
    assert sorted(p.name for p in stl.iterdir() if p.is_dir() and p.name != ".hydra") == ["shape", "size"]
    for task, monitor in (("shape", "shape/accuracy"), ("size", "size/mae")):
        sub = stl / task
        s = load(sub / "summary.json")
        assert list(s["tasks"]) == [task]  # one task, everything else disabled
        assert s["objective"]["monitor"] == monitor
        assert (sub / "checkpoints" / "best.pt").is_file() and (sub / "metrics.jsonl").is_file()
        cfg = (sub / "config.yaml").read_text()
        assert "arch:\n  name: hps\n" in cfg and "weighting:\n  name: ew\n" in cfg
        assert s["parameters"]["shared"] == load(stl / "shape" / "summary.json")["parameters"]["shared"]
    assert sum(1 for r in records(stl / "size") if r["split"] == "val") == 3  # the whole schedule


def test_baselines_json_holds_each_runs_summary(stl):
    doc = load(stl / "baselines.json")
    assert list(doc["tasks"]) == ["shape", "size"]
    for task in ("shape", "size"):
        s = load(stl / task / "summary.json")
        b = doc["tasks"][task]
        assert b["test"] == s["test"][task]
        assert b["val"] == s["val_selected"][task]
        assert b["directions"] == s["tasks"][task]["directions"]
        assert b["primary_metric"] == s["tasks"][task]["primary_metric"]
        assert b["selected_epoch"] == s["selected_epoch"]
        assert b["run_dir"] == s["run_dir"] == str(stl / task)
    assert doc["tasks"]["size"]["directions"] == {"mae": "lower", "rmse": "lower", "r2": "higher"}
    c = doc["config"]
    assert c["seed"] == 0 and c["trainer"]["max_epochs"] == 3 and c["trainer"]["batch_size"] == 32
    assert c["backbone"]["name"] == "mlp" and c["data"]["train_size"] == 128 and c["data"]["image_size"] == 16
    assert c["optimizer"]["_target_"] == "torch.optim.AdamW"


def test_stl_summary_combines_the_runs(stl):
    summary = load(stl / "summary.json")
    subs = {t: load(stl / t / "summary.json") for t in ("shape", "size")}
    assert summary["baseline"] == "stl"
    # the objective: mean of each run's selection score (accuracy, and -mae for a lower-is-better error)
    expected = (subs["shape"]["objective"]["value"] + subs["size"]["objective"]["value"]) / 2
    assert summary["objective"]["value"] == pytest.approx(expected)
    assert summary["objective"]["monitor"] == "mean(shape/accuracy, -size/mae)"
    assert summary["test"] == {t: subs[t]["test"][t] for t in subs}
    assert summary["steps"] == subs["shape"]["steps"] + subs["size"]["steps"] == 24
    assert summary["selected_epochs"] == {t: subs[t]["selected_epoch"] for t in subs}


def test_a_single_task_run_is_the_plain_single_task_run(stl, tmp_path):
    """Same data, schedule, optimizer and seed: the baseline of `shape` is exactly the run a user
    would get with the other tasks disabled, weighting=ew and its own monitor."""
    d = tmp_path / "plain"
    s = train(compose(TWO + ["tasks.size.enabled=false", "weighting=ew", "trainer.monitor=shape/accuracy"]), d)
    ref = load(stl / "shape" / "summary.json")
    assert s["test"] == ref["test"] and s["val_selected"] == ref["val_selected"]
    assert records(d) == records(stl / "shape")


@pytest.mark.slow
def test_stl_in_a_sweep_gives_each_job_its_baselines(tmp_path):
    sweep = tmp_path / "sweep"
    cli.main(["-m", "seed=0,1", f"hydra.sweep.dir={sweep}", *TWO, "baseline=stl", "trainer.max_epochs=1"])
    for job, seed in (("0", 0), ("1", 1)):
        doc = load(sweep / job / "baselines.json")
        assert doc["config"]["seed"] == seed
        for task in ("shape", "size"):
            assert doc["tasks"][task]["test"] == load(sweep / job / task / "summary.json")["test"][task]
    a, b = (load(sweep / j / "baselines.json")["tasks"]["size"]["test"]["mae"] for j in ("0", "1"))
    assert a != b  # the seed reached the runs


class Crash(Exception):
    """Stands for a kill in the middle of the second single-task run."""


@pytest.mark.slow
def test_stl_interrupted_then_resume_auto_gives_the_same_baselines(stl, monkeypatch, tmp_path):
    d = tmp_path / "base"
    orig = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        orig(self)
        if self.names == ["size"] and self.prog.step == 6:
            raise Crash("in epoch 2 of size")

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)
        with pytest.raises(Crash):
            train(compose(TWO + ["baseline=stl"]), d)
    assert (d / "shape" / "summary.json").is_file() and not (d / "size" / "summary.json").exists()
    assert not (d / "baselines.json").exists() and load(d / "error.json")["type"] == "Crash"
    train(compose(TWO + ["baseline=stl", "resume=auto"]), d)
    got, ref = load(d / "baselines.json")["tasks"], load(stl / "baselines.json")["tasks"]
    for task in ("shape", "size"):
        for k in ("test", "val", "selected_epoch"):
            assert got[task][k] == ref[task][k]
    assert not (d / "error.json").exists()
    assert "resumed from" in (d / "size" / "train.log").read_text()


def test_stl_resumes_only_with_resume_auto(tmp_path):
    with pytest.raises(ConfigError) as e:
        train(compose(TWO + ["baseline=stl", f"resume={tmp_path}"]), tmp_path / "base")
    assert "resume=auto" in str(e.value) and not (tmp_path / "base").exists()


# ---------------------------------------------------------------- Δm in a multi-task run
def test_delta_m_in_the_summary_matches_a_hand_computation(stl, mtl):
    m = load(mtl / "summary.json")
    sh = load(stl / "shape" / "summary.json")
    sz = load(stl / "size" / "summary.json")
    dm = m["delta_m"]
    for split, mk, bk in (("test", "test", "test"), ("val", "val_selected", "val_selected")):
        mt, bs, bz = m[mk], sh[bk]["shape"], sz[bk]["size"]
        acc = (mt["shape"]["accuracy"] - bs["accuracy"]) / abs(bs["accuracy"])  # higher is better: +1
        f1 = (mt["shape"]["f1"] - bs["f1"]) / abs(bs["f1"])
        mae = -(mt["size"]["mae"] - bz["mae"]) / abs(bz["mae"])  # lower is better: -1
        rmse = -(mt["size"]["rmse"] - bz["rmse"]) / abs(bz["rmse"])
        r2 = (mt["size"]["r2"] - bz["r2"]) / abs(bz["r2"])
        shape_mean = (acc + f1) / 2
        size_mean = (mae + rmse + r2) / 3
        assert dm[split] == pytest.approx(100 * (shape_mean + size_mean) / 2, rel=1e-12, abs=1e-12)
        if split == "test":
            assert dm["per_task"]["shape"] == pytest.approx({"accuracy": 100 * acc, "f1": 100 * f1})
            assert dm["per_task"]["size"] == pytest.approx({"mae": 100 * mae, "rmse": 100 * rmse, "r2": 100 * r2})
    assert dm["skipped"] == [] and dm["baseline_dir"] == str(stl)
    assert "loss" not in dm["per_task"]["shape"]


def test_monitor_delta_m_selects_the_epoch_with_the_best_val_delta_m(stl, tmp_path):
    d = tmp_path / "run"
    s = train(compose(TWO + [f"baseline_dir={stl}", "trainer.monitor=delta_m", "seed=1"]), d)
    base = load(stl / "baselines.json")["tasks"]
    dirs = {"shape": {"accuracy": 1, "f1": 1}, "size": {"mae": -1, "rmse": -1, "r2": 1}}
    by_epoch = {}
    for r in records(d):
        if r["split"] != "val":
            continue
        per_task = [
            sum(sign * (r[f"{t}/{k}"] - base[t]["val"][k]) / abs(base[t]["val"][k]) for k, sign in ms.items()) / len(ms)
            for t, ms in dirs.items()
        ]
        by_epoch[r["epoch"]] = 100 * sum(per_task) / len(per_task)
        assert r["score"] == pytest.approx(by_epoch[r["epoch"]], rel=1e-12)
    assert len(set(round(v, 6) for v in by_epoch.values())) == 3  # the epochs differ: a real choice
    best = max(by_epoch, key=by_epoch.get)
    assert s["selected_epoch"] == best and s["objective"]["monitor"] == "delta_m"
    assert s["objective"]["value"] == pytest.approx(by_epoch[best], rel=1e-12)
    assert s["delta_m"]["val"] == pytest.approx(by_epoch[best], rel=1e-12)
    # the baselines were trained with seed 0: a warning names the difference
    assert "seed: 0 there, 1 here" in (d / "train.log").read_text()


# ---------------------------------------------------------------- the pure function
def test_delta_m_on_hand_made_numbers():
    results = {
        "cls": {"acc": 0.9, "f1": 0.6, "loss": 5.0},
        "reg": {"mae": 0.3, "rmse": 0.5, "r2": 0.4},
        "gone": {"x": 1.0},
        "nan": {"acc": NAN, "f1": 0.5},
    }
    baselines = {
        "cls": {"acc": 0.8, "f1": 0.5, "loss": 1.0},
        "reg": {"mae": 0.4, "rmse": 0.0, "r2": -0.5},
        "gone": {"x": NAN},
        "nan": {"acc": 0.5, "f1": 0.4},
    }
    directions = {
        "cls": {"acc": "higher", "f1": "higher"},
        "reg": {"mae": "lower", "rmse": "lower", "r2": "higher"},
        "gone": {"x": "higher"},
        "nan": {"acc": "higher", "f1": "higher"},
    }
    out = delta_m(results, baselines, directions)
    # cls: acc (0.9-0.8)/0.8 = +12.5 %, f1 (0.6-0.5)/0.5 = +20 %          -> 16.25 %
    # reg: mae -(0.3-0.4)/0.4 = +25 %, rmse skipped (baseline 0),
    #      r2 (0.4-(-0.5))/|-0.5| = +180 % (an R² that rose from -0.5 to 0.4 is a gain)  -> 102.5 %
    # gone: every metric skipped (NaN baseline): not in the mean
    # nan: acc skipped (its own value is NaN), f1 (0.5-0.4)/0.4 = +25 %  -> 25 %
    assert list(out["per_task"]) == ["cls", "reg", "nan"]
    assert out["per_task"]["cls"] == pytest.approx({"acc": 12.5, "f1": 20.0})
    assert out["per_task"]["reg"] == pytest.approx({"mae": 25.0, "r2": 180.0})
    assert out["per_task"]["nan"] == pytest.approx({"f1": 25.0})
    assert out["task_mean"] == pytest.approx({"cls": 16.25, "reg": 102.5, "nan": 25.0})
    assert out["delta_m"] == pytest.approx((16.25 + 102.5 + 25.0) / 3)  # 47.9166...
    assert out["skipped"] == [
        {"task": "reg", "metric": "rmse", "reason": "baseline is 0"},
        {"task": "gone", "metric": "x", "reason": "baseline is NaN"},
        {"task": "nan", "metric": "acc", "reason": "value is NaN"},
    ]


def test_delta_m_signs_and_libmtl_form():
    # a worse MTL model is negative: accuracy 0.7 vs 0.8 -> -12.5 %; error 0.5 vs 0.4 -> -25 %
    out = delta_m(
        {"a": {"acc": 0.7}, "b": {"err": 0.5}},
        {"a": {"acc": 0.8}, "b": {"err": 0.4}},
        {"a": {"acc": "higher"}, "b": {"err": "lower"}},
    )
    assert out["delta_m"] == pytest.approx((-12.5 - 25.0) / 2)
    # equal to the single-task models: 0; nothing countable: NaN; a missing baseline value is listed
    assert delta_m({"a": {"acc": 0.8}}, {"a": {"acc": 0.8}}, {"a": {"acc": "higher"}})["delta_m"] == 0.0
    none = delta_m({"a": {"acc": 0.8}}, {"a": {}}, {"a": {"acc": "higher"}})
    assert math.isnan(none["delta_m"]) and none["skipped"] == [
        {"task": "a", "metric": "acc", "reason": "no baseline value"}
    ]
    with pytest.raises(ValueError, match="direction"):
        delta_m({"a": {"acc": 1.0}}, {"a": {"acc": 1.0}}, {"a": {"acc": "up"}})


def test_setting_differences_name_each_key():
    cfg = compose(TWO).copy()
    from omegaconf import OmegaConf

    a = OmegaConf.to_container(cfg, resolve=True)
    b = OmegaConf.to_container(compose(TWO + ["seed=3", "data.train_size=64", "tasks.shape.weight=2"]), resolve=True)
    diff = setting_differences(shared_settings(a), b)
    assert diff == [("data.train_size", 128, 64), ("seed", 0, 3)]  # task weights are not a shared setting


# ---------------------------------------------------------------- validation
def _write(d: Path, tasks: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "baselines.json").write_text(json.dumps({"format": 1, "tasks": tasks, "config": {}}))
    return d


def _task(directions: dict) -> dict:
    vals = {m: 0.5 for m in directions}
    return {"test": vals, "val": vals, "directions": directions, "primary_metric": next(iter(directions))}


SHAPE = {"accuracy": "higher", "f1": "higher"}
SIZE = {"mae": "lower", "rmse": "lower", "r2": "higher"}


def _only_shape(tmp):
    return _write(tmp / "b", {"shape": _task(SHAPE)})


def _no_r2(tmp):
    return _write(tmp / "b", {"shape": _task(SHAPE), "size": _task({"mae": "lower", "rmse": "lower"})})


def _flipped(tmp):
    return _write(tmp / "b", {"shape": _task(SHAPE), "size": _task({"mae": "higher", "rmse": "lower", "r2": "higher"})})


def _sub_run(tmp):
    _write(tmp / "b", {"shape": _task(SHAPE), "size": _task(SIZE)})
    (tmp / "b" / "size").mkdir()
    return tmp / "b" / "size"


def _not_json(tmp):
    (tmp / "b").mkdir()
    (tmp / "b" / "baselines.json").write_text("{not json")
    return tmp / "b"


@pytest.mark.parametrize(
    "make, extra, words",
    [
        (
            lambda tmp: tmp / "nowhere",
            [],
            ["baseline_dir: no such directory", "nowhere", "mtl-train baseline=stl run_dir="],
        ),
        (lambda tmp: tmp, [], ["has no baselines.json", "mtl-train baseline=stl run_dir="]),
        (_only_shape, [], ["has no baseline for task(s) size", "its tasks: shape", "mtl-train baseline=stl run_dir="]),
        (_no_r2, [], ["the baseline of task size lacks metric(s) r2", "its metrics: mae, rmse", "tasks.size.metrics"]),
        (_flipped, [], ["measures mae in the other direction"]),
        (_sub_run, [], ["has no baselines.json", "use its parent directory: baseline_dir="]),
        (_not_json, [], ["cannot read", "baselines.json"]),
        (
            None,
            ["trainer.monitor=delta_m"],
            [
                "trainer.monitor: delta_m selects by Δm",
                "baseline_dir is not set",
                "mtl-train baseline=stl run_dir=<dir>",
            ],
        ),
    ],
    ids=[
        "missing_dir",
        "no_file",
        "missing_task",
        "missing_metric",
        "other_direction",
        "sub_run_dir",
        "not_json",
        "delta_m_without_baseline_dir",
    ],
)
def test_bad_baselines_are_refused_with_exit_2(tmp_path, capsys, make, extra, words):
    argv = TWO + [f"run_dir={tmp_path / 'run'}", *extra]
    if make is not None:
        argv.append(f"baseline_dir={make(tmp_path)}")
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("Config error") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_good_hand_made_baseline_passes_validation_and_monitor_lists_delta_m(tmp_path, capsys):
    from mtl_cli.validation import validate

    d = _write(tmp_path / "b", {"shape": _task(SHAPE), "size": _task(SIZE), "extra": _task(SHAPE)})
    validate(compose(TWO + [f"baseline_dir={d}", "trainer.monitor=delta_m"]))  # extra tasks are fine
    with pytest.raises(SystemExit) as e:
        cli.main(TWO + ["trainer.monitor=nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "mean_rel, delta_m, shape/accuracy" in err


def test_auxiliary_tasks_need_no_baseline_and_do_not_count(tmp_path):
    from mtl_cli.build import build_tasks
    from mtl_cli.train.evaluate import Selector
    from mtl_cli.validation import validate

    d = _write(
        tmp_path / "b",
        {
            "shape": {
                "test": {"accuracy": 0.5, "f1": 0.4},
                "val": {"accuracy": 0.5, "f1": 0.4},
                "directions": SHAPE,
                "primary_metric": "accuracy",
            }
        },
    )
    plan = validate(compose(TWO + ["tasks.size.role=auxiliary", f"baseline_dir={d}", "trainer.monitor=delta_m"]))
    sel = Selector("delta_m", build_tasks(plan), {"shape": {"accuracy": 0.5, "f1": 0.4}})
    assert sel.directions == {"shape": SHAPE}
    # shape: accuracy (0.6-0.5)/0.5 = +20 %, f1 (0.3-0.4)/0.4 = -25 %: -2.5 %; size (auxiliary) is left out
    score = sel.score({"shape": {"accuracy": 0.6, "f1": 0.3, "loss": 1.0}, "size": {"mae": 9.0, "rmse": 9.0, "r2": -9}})
    assert score == pytest.approx(-2.5)
