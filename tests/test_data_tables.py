"""ARFF and MATLAB tables, task sets from a grouping column and from the last k columns, targets
standardised in training but scored in their units, the School and Mulan sources, and the warning
about task losses of very different sizes.

Every file is small and written here (ARFF as text, .mat with scipy.io.savemat); the tests that
read the real School and Mulan files skip when ../shared/data is absent.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

import mtl_cli.cli.train as cli
from mtl_cli.config.compose import compose
from mtl_cli.data.base import TargetSpec
from mtl_cli.data.readers import read_arff, read_mat
from mtl_cli.data.sources.csv import CsvSource, column_names, fold_rows, read_table
from mtl_cli.data.sources.mulan import TARGETS, MulanSource
from mtl_cli.data.sources.school import SchoolSource
from mtl_cli.errors import ConfigError, DataError
from mtl_cli.tasks.base import Decoding, Task
from mtl_cli.tasks.kinds.regression import Regression
from mtl_cli.tasks.loss_scale import loss_scale_warning, record_losses, task_weights, warn_loss_scales
from mtl_cli.validation import validate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
FAST += ["trainer.limit_test_batches=1", "trainer.progress=false", "device=cpu"]

ARFF = """% a comment
@relation 'test-set'
@attribute size numeric
@attribute colour {red,green,blue}
@attribute 'weight' real
@attribute "t/one" numeric
@attribute t.two numeric
@data
1, red, 10, 100, 5
2, green, ?, 200, ?
3, blue, 30, 300, 7
4, red, 50, 400, 9
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def whole(path: str) -> dict:
    """Every row in train (the file doubles as val and test)."""
    return {"val_path": path, "test_path": path}


# ============================================================================ readers
def test_arff_reader_cells_missing_values_and_nominal_attributes(tmp_path):
    table = read_table(Path(write(tmp_path / "d.arff", ARFF)))
    assert table.header == ["size", "colour", "weight", "t/one", "t.two"]  # quotes removed
    assert table.nominal == ["colour"]
    assert table.rows[1] == ["2", "green", "", "200", ""]  # ? is an empty (missing) cell
    assert [r[1] for r in table.rows] == ["red", "green", "blue", "red"]
    assert table.where(1) == "row 2"


def test_arff_source_last_targets_one_hot_imputes_and_masks(tmp_path):
    path = write(tmp_path / "d.arff", ARFF)
    src = CsvSource(path=path, last_targets=2, impute="mean", standardize_targets=False, **whole(path))
    spec = src.describe()
    assert list(spec.targets) == ["t_one", "t_two"]  # named by their columns, '/' and '.' as '_'
    assert src.artifacts["targets"] == {"t_one": "t/one", "t_two": "t.two"}
    assert src.artifacts["feature_names"] == ["size", "colour=blue", "colour=green", "colour=red", "weight"]
    ds = src.load()["train"]
    x = ds.inputs["features"]
    assert x[:, 1:4].tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]]  # nominal one-hot
    assert x[1, 4].item() == pytest.approx(30.0)  # missing weight: the train mean of 10, 30, 50
    assert ds.masks["t_two"].tolist() == [True, False, True, True]  # missing target: missing label
    assert ds.targets["t_one"].tolist() == [100, 200, 300, 400]


def test_arff_unreadable_and_bad_last_targets_are_named(tmp_path):
    bad = write(tmp_path / "bad.arff", "@relation r\n@attribute a string\n@data\nx\n")
    with pytest.raises(DataError) as e:
        read_arff(Path(bad))
    assert "bad.arff" in str(e.value) and "ARFF" in str(e.value)
    path = write(tmp_path / "d.arff", ARFF)
    with pytest.raises(DataError) as e:
        CsvSource(path=path, last_targets=5).describe()
    assert "data.last_targets" in str(e.value) and "1 to 4" in str(e.value)
    with pytest.raises(DataError) as e:
        CsvSource(path=path, last_targets=2, kinds={"nope": "regression"}).describe()
    assert "data.kinds.nope" in str(e.value) and "t_one" in str(e.value)


def test_arff_dates_are_text_and_can_be_left_out(tmp_path):
    text = '@relation r\n@attribute a numeric\n@attribute d date "yyyy-MM-dd"\n@attribute y numeric\n@data\n'
    path = write(tmp_path / "d.arff", text + '1,"2020-01-02",3\n2,?,4\n3,"2021-05-06",5\n')
    assert read_arff(Path(path)).rows[:2] == [["1", "2020-01-02", "3"], ["2", "", "4"]]
    with pytest.raises(DataError) as e:
        CsvSource(path=path, last_targets=1, **whole(path)).load()
    assert "column 'd'" in str(e.value) and "data.exclude=[d]" in str(e.value)
    ds = CsvSource(path=path, last_targets=1, exclude=["d"], **whole(path)).load()["train"]
    assert ds.inputs["features"][:, 0].tolist() == [1, 2, 3]


def test_column_names_are_usable_task_names():
    assert column_names(["a b", "a.b", "LBL+x/1", "+"]) == {
        "a_b": "a b",
        "a_b_2": "a.b",
        "LBL_x_1": "LBL+x/1",
        "target": "+",
    }


def test_mat_reader_orients_variables_by_the_sample_count(tmp_path):
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)  # 3 features x 4 samples: transposed
    savemat(tmp_path / "d.mat", {"x": x, "y": np.array([[0.5], [1.5], [2.5], [3.5]]), "starts": np.array([[1], [3]])})
    table = read_mat(tmp_path / "d.mat")
    assert table.header == ["x1", "x2", "x3", "y"]  # starts (2 x 1) is no column
    assert table.rows[0] == ["0", "4", "8", "0.5"] and table.rows[3] == ["3", "7", "11", "3.5"]
    src = CsvSource(path=str(tmp_path / "d.mat"), targets={"y": "y"}, **whole(str(tmp_path / "d.mat")))
    assert src.describe().inputs["features"].shape == (3,)


def test_mat_file_that_is_not_one_is_named(tmp_path):
    path = write(tmp_path / "d.mat", "not a mat file")
    with pytest.raises(DataError) as e:
        read_mat(Path(path))
    assert str(tmp_path / "d.mat") in str(e.value)


# ============================================================================ task sets
GROUPS = "x,g,y\n1,a,10\n2,b,20\n3,b,22\n4,c,31\n5,c,35\n6,b,24\n7,,50\n"


def test_group_by_one_target_per_group_labelled_in_its_rows_only(tmp_path):
    path = write(tmp_path / "g.csv", GROUPS)
    src = CsvSource(path=path, targets={"y": "y"}, group_by="g", standardize_targets=False, **whole(path))
    spec = src.describe()
    assert list(spec.targets) == ["y_a", "y_b", "y_c"]
    assert src.artifacts["features"] == ["x"]  # the grouping column is no feature
    ds = src.load()["train"]
    assert ds.masks["y_a"].tolist() == [True, False, False, False, False, False, False]  # a one-row group
    assert ds.masks["y_b"].tolist() == [False, True, True, False, False, True, False]
    assert ds.masks["y_c"].tolist() == [False, False, False, True, True, False, False]
    assert ds.targets["y_b"][ds.masks["y_b"]].tolist() == [20, 22, 24]
    # a row without a group (row 7) has no label for any task


def test_group_by_scaling_per_group_and_one_row_group(tmp_path):
    path = write(tmp_path / "g.csv", GROUPS)
    src = CsvSource(path=path, targets={"y": "y"}, group_by="g", **whole(path))
    spec = src.describe()
    assert spec.targets["y_a"].scaling == {"mean": 10.0, "std": 1.0}  # one row: only centred
    assert spec.targets["y_b"].scaling["mean"] == pytest.approx(22.0)
    assert spec.targets["y_b"].scaling["std"] == pytest.approx(math.sqrt(8 / 3))
    ds = src.load()["train"]
    assert ds.targets["y_a"][0].item() == 0.0
    assert ds.targets["y_c"][ds.masks["y_c"]].tolist() == pytest.approx([-1.0, 1.0])


def test_group_by_refused_as_target_or_feature(tmp_path):
    path = write(tmp_path / "g.csv", GROUPS)
    with pytest.raises(DataError) as e:
        CsvSource(path=path, targets={"y": "y"}, group_by="y")
    assert "data.group_by" in str(e.value)
    with pytest.raises(DataError) as e:
        CsvSource(path=path, targets={"y": "y"}, group_by="nope").describe()
    assert "'nope' (from data.group_by)" in str(e.value)


def test_target_pattern_gives_one_task_per_target(tmp_path):
    path = write(tmp_path / "g.csv", GROUPS)
    over = ["experiment=tabular", f"data.path={path}", f"data.val_path={path}", f"data.test_path={path}"]
    over += ["data.targets={y: y}", "data.group_by=g", "tasks=each_regression"]
    plan = validate(compose(over))
    assert list(plan.tasks) == ["y_a", "y_b", "y_c"]
    assert plan.cfg["tasks"]["y_b"]["target"] == "y_b" and "each" not in plan.cfg["tasks"]
    with pytest.raises(ConfigError) as e:
        validate(compose([*over, "tasks.each.target=z_*"]))
    assert "tasks.each.target" in str(e.value) and "y_a, y_b, y_c" in str(e.value)


def test_folds_partition_the_rows(tmp_path):
    tests = [set(fold_rows(23, 5, k, 0)["test"]) for k in range(1, 6)]
    assert set().union(*tests) == set(range(23)) and sum(len(t) for t in tests) == 23
    assert {len(t) for t in tests} <= {4, 5}
    path = write(tmp_path / "g.csv", "x,y\n" + "".join(f"{i},{i * 2}\n" for i in range(40)))
    src = CsvSource(path=path, targets={"y": "y"}, folds=4, fold=2, val_fraction=0.2)
    splits = src.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [24, 6, 10]
    assert src.artifacts["split"]["how"]["test"] == "fold 2 of 4"
    with pytest.raises(DataError) as e:
        CsvSource(path=path, targets={"y": "y"}, folds=4, fold=5)
    assert "data.fold" in str(e.value) and "1 to 4" in str(e.value)


# ============================================================================ target scaling
def test_standardised_target_round_trip(tmp_path):
    """The model learns z-scores (train split statistics); metric inputs and predictions are back
    in the target's units."""
    rows = "".join(f"{i},{4000 + 37 * i}\n" for i in range(20))
    path = write(tmp_path / "w.csv", "x,grams\n" + rows)
    src = CsvSource(path=path, targets={"grams": "grams"}, val_fraction=0.2, test_fraction=0.2)
    splits = src.load()
    scale = src.artifacts["target_scaling"]["grams"]
    train = splits["train"].targets["grams"].double()
    assert train.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    test = splits["test"].targets["grams"].double() * scale["std"] + scale["mean"]
    want = sorted(4000 + 37 * i for i in src.split_rows()["test"][0][1])
    assert sorted(test.tolist()) == pytest.approx(want, abs=1e-3)
    spec = src.describe().targets["grams"]
    task = Task("grams", Regression(), "features", "grams", spec, "mse", ["mae"], "mae")
    z = splits["test"].targets["grams"]
    p, t = Regression().metric_inputs(task, z.reshape(-1, 1), z, torch.ones_like(z, dtype=torch.bool))
    assert t.tolist() == pytest.approx(want, abs=1e-2) and p.tolist() == pytest.approx(want, abs=1e-2)
    decoded = Regression().decode(task, z.reshape(-1, 1), Decoding(dict(src.artifacts), ["s"] * len(z), None, None))
    assert [d["value"] for d in decoded] == pytest.approx(want, abs=1e-2)


def test_standardize_targets_off_keeps_the_units(tmp_path):
    path = write(tmp_path / "w.csv", "x,grams\n1,4000\n2,4100\n3,4300\n")
    src = CsvSource(path=path, targets={"grams": "grams"}, standardize_targets=False, **whole(path))
    assert src.describe().targets["grams"].scaling is None and "target_scaling" not in src.artifacts
    assert src.load()["train"].targets["grams"].tolist() == [4000, 4100, 4300]


@pytest.mark.parametrize("epochs", [2, pytest.param(12, marks=pytest.mark.slow)])
def test_grams_beside_a_class_train_and_are_scored_in_grams(tmp_path, monkeypatch, epochs):
    """A target in grams (about 4000) beside a classification task: summary.json's test metrics
    equal MAE, RMSE and R² computed here in grams from the model's predictions on the test rows;
    with the default scaling and 12 epochs (slow) the regression reaches R² > 0.9."""
    g = torch.Generator().manual_seed(0)
    n = 300
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    grams = 3000 + 2000 * a + 300 * b + 40 * torch.randn(n, generator=g)
    species = ["x" if u > 0.5 else "y" for u in b.tolist()]
    lines = ["a,b,grams,species", *[f"{u:.5f},{v:.5f},{w:.2f},{s}" for u, v, w, s in zip(a, b, grams, species)]]
    write(tmp_path / "birds.csv", "\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli.main(
        [
            "experiment=tabular",
            "data.path=birds.csv",
            "data.targets={grams: grams, species: species}",
            "+tasks.grams.kind=regression",
            "+tasks.species.kind=classification",
            f"trainer.max_epochs={epochs}",
            "trainer.progress=false",
            "device=cpu",
            f"run_dir={tmp_path / 'run'}",
        ]
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    got = summary["test"]["grams"]
    if epochs > 2:
        assert got["r2"] > 0.9 and summary["test"]["species"]["accuracy"] > 0.8
    from mtl_cli.runs import load_run

    run = load_run(tmp_path / "run")
    test = run.plan.source.load()["test"]
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    scale = info["target_scaling"]["grams"]
    with torch.no_grad():
        z = run.model({"features": test.inputs["features"]})["grams"].reshape(-1).double()
    pred = z * scale["std"] + scale["mean"]
    truth = torch.tensor([grams[i].item() for i in run.plan.source.split_rows()["test"][0][1]], dtype=torch.float64)
    truth = torch.tensor([float(f"{v:.2f}") for v in truth.tolist()], dtype=torch.float64)  # as written
    err = pred - truth
    mae, rmse = err.abs().mean().item(), err.pow(2).mean().sqrt().item()
    r2 = 1 - err.pow(2).sum().item() / (truth - truth.mean()).pow(2).sum().item()
    assert got["mae"] == pytest.approx(mae, rel=1e-3) and got["rmse"] == pytest.approx(rmse, rel=1e-3)
    assert got["r2"] == pytest.approx(r2, abs=1e-4)
    assert 10 < got["mae"] < 1000  # grams, not z-scores


# ============================================================================ School and Mulan sources
def school_files(folder: Path) -> Path:
    """A School-like folder: 20 rows of 3 features, schools of 1, 8 and 11 rows, split 1."""
    folder.mkdir()
    n = 20
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(3, n)).astype(np.uint8)
    y = (x.sum(0) * 3 + 10).reshape(n, 1).astype(np.uint8)
    savemat(folder / "school_b.mat", {"x": x, "y": y, "task_indexes": np.array([[1], [2], [10]], dtype=np.uint16)})
    test = [3, 4, 12, 13, 14]  # 1-based; school 1 (row 1, one row) stays in train
    train = [i for i in range(1, n + 1) if i not in test]
    savemat(folder / "school_1_indexes.mat", {"tr": np.array([train]), "tst": np.array([test])})
    return folder


def test_school_source_groups_and_published_split(tmp_path):
    folder = school_files(tmp_path / "school")
    src = SchoolSource(path=str(folder), split=1, val_fraction=0.2)
    spec = src.describe()
    assert list(spec.targets) == ["school_1", "school_2", "school_3"]
    assert spec.inputs["features"].shape == (3,)
    splits = src.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [12, 3, 5]
    test = splits["test"]
    assert test.masks["school_1"].sum().item() == 0  # the one-row school is in train
    assert test.masks["school_2"].tolist() == [True, True, False, False, False]
    assert test.masks["school_3"].tolist() == [False, False, True, True, True]
    assert src.artifacts["split"]["how"]["test"].startswith("published split 1")


def test_school_and_mulan_config_errors_exit_2(tmp_path, capsys):
    def run(*overrides: str) -> str:
        with pytest.raises(SystemExit) as e:
            cli.main([*overrides, *FAST, f"run_dir={tmp_path / 'run'}"])
        assert e.value.code == 2
        return capsys.readouterr().err

    err = run("experiment=school")
    assert "data.path: no data folder given" in err and "fix: set data.path=FOLDER" in err
    assert "tasks:" not in err  # nothing else reported
    err = run("experiment=school", f"data.path={tmp_path}", "data.split=11")
    assert "data.split" in err and "11" in err
    err = run("experiment=school", f"data.path={tmp_path}")
    assert "data.path: the folder lacks school_b.mat, school_1_indexes.mat" in err
    err = run("experiment=mulan", f"data.path={tmp_path}")
    assert "data.set: no Mulan set chosen" in err and "enb" in err
    err = run("experiment=mulan", f"data.path={tmp_path}", "data.set=enb")
    assert "data.path: the folder lacks enb.arff" in err
    err = run("experiment=mulan", f"data.path={tmp_path}", "data.set=nope")
    assert "data.set" in err and "scm20d" in err


def test_school_experiment_trains_from_the_cli(tmp_path):
    folder = school_files(tmp_path / "school")
    cli.main(["experiment=school", f"data.path={folder}", "data.val_fraction=0.2", *FAST, f"run_dir={tmp_path / 'r'}"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert sorted(summary["tasks"]) == ["school_1", "school_2", "school_3"]
    assert math.isnan(summary["test"]["school_1"]["mae"] or math.nan)  # no test row of school 1


def test_mulan_source_last_k_targets(tmp_path):
    folder = tmp_path / "mtr"
    folder.mkdir()
    rows = "".join(f"{i}, {'red' if i % 2 else 'blue'}, {i * 2}, {i * 3}\n" for i in range(30))
    write(folder / "edm.arff", "@relation edm\n@attribute a numeric\n@attribute c {red,blue}\n"
          "@attribute DFlow numeric\n@attribute DGap numeric\n@data\n" + rows)  # fmt: skip
    src = MulanSource(path=str(folder), set="edm", folds=3, fold=3)
    assert list(src.describe().targets) == ["DFlow", "DGap"] and TARGETS["edm"] == 2
    splits = src.load()
    assert len(splits["test"]) == 10 and src.artifacts["feature_names"] == ["a", "c=blue", "c=red"]


@pytest.mark.skipif(not (SHARED / "school" / "school_b.mat").is_file(), reason="../shared/data/school absent")
def test_real_school_split_counts():
    src = SchoolSource(path=str(SHARED / "school"), split=3)
    spec = src.describe()
    assert len(spec.targets) == 139 and spec.inputs["features"].shape == (28,)
    rows = src.split_rows()
    assert len(rows["train"][0][1]) + len(rows["val"][0][1]) == 11472 and len(rows["test"][0][1]) == 3890


@pytest.mark.skipif(not (SHARED / "mulan_mtr" / "sf1.arff").is_file(), reason="../shared/data/mulan_mtr absent")
@pytest.mark.parametrize("name,rows", [("sf1", 323), ("enb", 768), ("osales", 639)])
def test_real_mulan_sets(name, rows):
    src = MulanSource(path=str(SHARED / "mulan_mtr"), set=name, folds=10)
    assert len(src.describe().targets) == TARGETS[name]
    splits = src.load()
    assert sum(len(s) for s in splits.values()) == rows
    assert not splits["train"].inputs["features"].isnan().any()  # osales's missing values imputed


# ============================================================================ loss scales
def test_loss_scale_warning(caplog):
    assert loss_scale_warning({"a": 1.0, "b": 50.0}) is None
    assert loss_scale_warning({"a": 1.0, "b": math.nan, "c": 0.0}) is None  # one usable loss
    text = loss_scale_warning({"shape": 0.7, "grams": 1.6e7, "none": math.nan})
    assert text is not None and "grams" in text and "shape" in text and "2.29e+07x" in text
    assert "data.standardize_targets=true" in text and "lower tasks.grams.weight" in text
    assert "raise tasks.shape.weight" in text and text.startswith("task losses")
    # compared as the methods see them, pre-scaled by tasks.<name>.weight: the advice silences it
    assert loss_scale_warning({"shape": 0.7, "grams": 1.6e7}, weights={"grams": 1e-7}) is None
    weighted = loss_scale_warning({"a": 1.0, "b": 2.0}, weights={"a": 1e-3})
    assert weighted is not None and weighted.startswith("weighted task losses") and "2e+03x between b and a" in weighted
    assert task_weights({"tasks": {"a": {"weight": 0.5}, "b": {"kind": "x"}, "c": None}}) == {"a": 0.5}
    assert task_weights(None) == {} and task_weights({"tasks": ["a"]}) == {}
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        assert warn_loss_scales({"a": 1.0, "b": 1000.0}, ratio=10) is not None
        assert warn_loss_scales({"a": 1.0, "b": 5.0}, ratio=10) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_target_spec_scaling_defaults_to_none():
    assert TargetSpec("y", "regression").scaling is None


def test_single_task_baselines_of_pattern_tasks(tmp_path):
    """baseline=stl trains one run per task that a target pattern made."""
    path = write(tmp_path / "g.csv", "x,g,y\n" + "".join(f"{i},{'ab'[i % 2]},{i * 3}\n" for i in range(30)))
    over = ["experiment=tabular", f"data.path={path}", "data.targets={y: y}", "data.group_by=g"]
    cli.main([*over, "tasks=each_regression", "baseline=stl", *FAST, f"run_dir={tmp_path / 'stl'}"])
    baselines = json.loads((tmp_path / "stl" / "baselines.json").read_text())
    assert sorted(baselines["tasks"]) == ["y_a", "y_b"]
    # each single-task run trains on its own group's rows only (the others carry no label of its task)
    every, other = (json.loads((tmp_path / "stl" / t / "data.json").read_text())["splits"] for t in ("y_a", "y_b"))
    cli.main([*over, "tasks=each_regression", *FAST, f"run_dir={tmp_path / 'mtl'}"])
    both = json.loads((tmp_path / "mtl" / "data.json").read_text())["splits"]
    assert every["train"] + other["train"] == both["train"] and 0 < every["train"] < both["train"]
    assert every["val"] == both["val"] and every["test"] == both["test"]  # evaluation splits stay whole
    log = (tmp_path / "stl" / "y_a" / "train.log").read_text()
    assert f"{both['train'] - every['train']} of {both['train']} training rows have no label" in log


def test_record_losses_of_train_and_val_records():
    train = {"split": "train", "step": 5, "loss/a": 0.5, "loss/b": 2e6, "loss": 9.0, "weight/a": 1.0}
    assert record_losses(train) == {"a": 0.5, "b": 2e6}
    val = {"split": "val", "epoch": 1, "score": 0.1, "a/loss": 0.7, "a/mae": 3.0, "b/loss": None}
    assert record_losses(val) == {"a": 0.7}
    assert record_losses({"split": "grad", "grad_norm/a": 1.0}) == {}


def test_the_metrics_writer_warns_once_about_loss_scales(tmp_path, caplog):
    from mtl_cli.train.rundir import MetricsWriter

    writer = MetricsWriter(tmp_path, backends={}, config={})
    writer.open()
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        writer.log({"split": "train", "step": 1, "loss/size": 1.6e7, "loss/shape": 0.69})
        writer.log({"split": "val", "epoch": 1, "size/loss": 1.5e7, "shape/loss": 0.6})
    writer.close()
    warned = [r.getMessage() for r in caplog.records if "orders of magnitude" in r.getMessage()]
    assert len(warned) == 1 and "size" in warned[0]
    resumed = MetricsWriter(tmp_path, keep=2, backends={}, config={})
    resumed.open()  # its kept records were checked when written
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        resumed.log({"split": "train", "step": 3, "loss/size": 1.6e7, "loss/shape": 0.69})
    resumed.close()
    assert len([r for r in caplog.records if "orders of magnitude" in r.getMessage()]) == 1
    caplog.clear()
    weighted = MetricsWriter(tmp_path / "w", backends={}, config={"tasks": {"size": {"weight": 1e-7}}})
    (tmp_path / "w").mkdir()
    weighted.open()  # its config's task weights pre-scale the losses compared
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        weighted.log({"split": "train", "step": 1, "loss/size": 1.6e7, "loss/shape": 0.69})
    weighted.close()
    assert not [r for r in caplog.records if "orders of magnitude" in r.getMessage()]


def test_a_run_with_raw_grams_warns_in_its_log(tmp_path, monkeypatch):
    """standardize_targets=false on a target in grams: train.log says the losses differ."""
    path = write(
        tmp_path / "w.csv", "x,grams,kind\n" + "".join(f"{i},{4000 + 9 * i},{'ab'[i % 2]}\n" for i in range(40))
    )
    over = ["experiment=tabular", f"data.path={path}", "data.targets={grams: grams, kind: kind}"]
    over += ["data.standardize_targets=false", "+tasks.grams.kind=regression", "+tasks.kind.kind=classification"]
    cli.main([*over, *FAST, f"run_dir={tmp_path / 'r'}"])
    assert "task losses differ by orders of magnitude" in (tmp_path / "r" / "train.log").read_text()


@pytest.mark.parametrize("standardized", [True, False])
def test_evaluation_uses_the_scaling_the_run_recorded(tmp_path, capsys, standardized):
    """mtl-eval scores a run with the scaling its data.json records: a run whose config predates
    standardize_targets (the key missing, so the default would now be true) trained on raw values
    and is scored so; a standardised run is scored in the target's units."""
    import yaml

    import mtl_cli.cli.evaluate as ev
    from mtl_cli.runs import load_run

    path = write(tmp_path / "w.csv", "x,grams\n" + "".join(f"{i},{4000 + 9 * i}\n" for i in range(40)))
    over = ["experiment=tabular", f"data.path={path}", "data.targets={grams: grams}", "+tasks.grams.kind=regression"]
    run_dir = tmp_path / "r"
    cli.main([*over, f"data.standardize_targets={str(standardized).lower()}", *FAST, f"run_dir={run_dir}"])
    if not standardized:  # a run from before the key existed
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        del cfg["data"]["standardize_targets"]
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = load_run(run_dir)
    assert (run.tasks[0].spec.scaling is not None) == standardized
    assert ("target_scaling" in run.artifacts()) == standardized
    ev.main([str(run_dir)])
    capsys.readouterr()
    got = json.loads((run_dir / "eval" / "test-best.json").read_text())["metrics"]["grams"]
    want = json.loads((run_dir / "summary.json").read_text())["test"]["grams"]
    assert got["mae"] == pytest.approx(want["mae"], rel=1e-5)


def test_the_epoch_line_of_many_tasks_names_a_few_and_counts_the_rest(tmp_path):
    """10 tasks (one per group): the epoch line names 4 and counts 6; metrics.jsonl has all 10."""
    rows = "".join(f"{i},{'abcdefghij'[i % 10]},{i % 7}\n" for i in range(120))
    path = write(tmp_path / "g.csv", "x,g,y\n" + rows)
    over = ["experiment=tabular", f"data.path={path}", "data.targets={y: y}", "data.group_by=g"]
    cli.main([*over, "tasks=each_regression", *FAST, f"run_dir={tmp_path / 'run'}"])
    (line,) = [ln for ln in (tmp_path / "run" / "train.log").read_text().splitlines() if " epoch 1  val " in ln]
    assert line.count("/mae=") == 4 and "... and 6 more tasks (metrics.jsonl)" in line
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (val,) = [r for r in records if r["split"] == "val"]
    assert sorted(k for k in val if k.endswith("/mae")) == [f"y_{c}/mae" for c in "abcdefghij"]
