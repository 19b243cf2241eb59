"""The csv data source: label mapping, missing labels, standardisation, imputation, errors."""

from __future__ import annotations

import math

import pytest
import torch

from mtl_cli.config.checks import component_problems
from mtl_cli.data.sources.csv import CsvSource
from mtl_cli.errors import DataError
from mtl_cli.registry import SOURCES


def write(path, text: str):
    path.write_text(text.strip() + "\n")
    return str(path)


@pytest.fixture
def houses(tmp_path):
    """10 rows: two features, a string class, a number, and a binary column."""
    rows = ["size,rooms,kind,price,sold"]
    kinds = ["house", "flat", "villa", "flat", "house", "flat", "villa", "house", "flat", "house"]
    for i, k in enumerate(kinds):
        price = "" if i == 3 else str(100 + 10 * i)  # row 4 has no price
        rows.append(f"{50 + 5 * i},{1 + i % 3},{k},{price},{i % 2}")
    return write(tmp_path / "houses.csv", "\n".join(rows))


def source(path, **kw):
    kw.setdefault("targets", {"kind": "kind", "price": "price"})
    return CsvSource(path=path, **kw)


def whole(path: str) -> dict:
    """Arguments that keep every row of ``path`` in train (the file doubles as val and test)."""
    return {"val_path": path, "test_path": path}


def test_registered():
    assert SOURCES.get("csv") is CsvSource


def test_string_labels_sorted_mapping_in_artifacts(houses):
    src = source(houses, **whole(houses))
    spec = src.describe()
    assert spec.targets["kind"].kind == "classification"
    assert spec.targets["kind"].class_names == ["flat", "house", "villa"]
    assert spec.targets["price"].kind == "regression"
    assert spec.artifacts["label_maps"] == {"kind": {"flat": 0, "house": 1, "villa": 2}}
    assert spec.inputs["features"].shape == (3,)  # size, rooms, sold (not the targets)
    assert spec.artifacts["features"] == ["size", "rooms", "sold"]
    ds = src.load()["train"]
    order = torch.argsort(ds.inputs["features"][:, 0])  # size grows with the file row
    assert ds.targets["kind"][order].tolist() == [1, 0, 2, 0, 1, 0, 2, 1, 0, 1]
    assert ds.targets["kind"].dtype == torch.int64


def test_numeric_class_labels_sort_numerically(tmp_path):
    path = write(tmp_path / "d.csv", "x,y\n1,10\n2,2\n3,9")
    src = CsvSource(path=path, targets={"y": "y"}, kinds={"y": "classification"}, **whole(path))
    assert src.describe().targets["y"].class_names == ["2", "9", "10"]


def test_empty_target_cell_is_masked_other_targets_unaffected(houses):
    ds = source(houses, standardize_targets=False, **whole(houses)).load()["train"]
    row4 = int((ds.inputs["features"][:, 0] == 65).nonzero())  # size 65 is file row 4
    assert not ds.masks["price"][row4]
    assert ds.masks["kind"][row4] and ds.targets["kind"][row4] == 0  # flat
    assert int(ds.masks["price"].sum()) == 9
    prices = ds.targets["price"][ds.masks["price"]]
    assert sorted(prices.tolist()) == [100, 110, 120, 140, 150, 160, 170, 180, 190]


def test_binary_kind(houses):
    src = source(houses, targets={"sold": "sold"}, kinds={"sold": "binary"}, exclude=["kind", "price"], **whole(houses))
    ds = src.load()["train"]
    order = torch.argsort(ds.inputs["features"][:, 0])
    assert ds.targets["sold"].dtype == torch.float32
    assert ds.targets["sold"][order].tolist() == [0, 1] * 5


def test_standardize_uses_train_statistics(houses):
    src = source(houses, standardize=True, val_fraction=0.2, test_fraction=0.2)
    splits = src.load()
    x = splits["train"].inputs["features"]
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(3), atol=1e-5)
    # the statistics are the train rows' ones, and val/test are scaled with them too
    mean, std = (torch.tensor(src.artifacts["standardize"][k]) for k in ("mean", "std"))
    raw = {s: ds.inputs["features"] * std + mean for s, ds in splits.items()}
    assert torch.allclose(mean, raw["train"].mean(0), atol=1e-4)
    sizes = sorted(v for r in raw.values() for v in r[:, 0].round().tolist())
    assert sizes == [50.0 + 5 * i for i in range(10)]


def test_non_numeric_feature_names_column_and_row(tmp_path):
    path = write(tmp_path / "bad.csv", "a,b,y\n1,2,3\n4,oops,5\n6,7,8")
    with pytest.raises(DataError) as e:
        CsvSource(path=path, targets={"y": "y"}).load()
    msg = str(e.value)
    assert "'b'" in msg and "row 2" in msg and "line 3" in msg and "oops" in msg
    assert str(tmp_path / "bad.csv") in msg


def test_bad_column_reported_once_with_count(houses):
    with pytest.raises(DataError) as e:
        source(houses, targets={"price": "price"}).load()
    assert len(e.value.problems) == 1
    msg = str(e.value)
    assert "column 'kind'" in msg and "row 1 " in msg and "'house'" in msg
    assert "9 more row(s)" in msg


def test_missing_feature_without_impute_is_an_error(tmp_path):
    path = write(tmp_path / "m.csv", "a,b,y\n1,,3\n4,5,6")
    with pytest.raises(DataError, match=r"row 1 .*column 'b': missing feature value"):
        CsvSource(path=path, targets={"y": "y"}).load()


def test_missing_column_lists_available(houses):
    with pytest.raises(DataError) as e:
        source(houses, targets={"price": "cost"}).describe()
    msg = str(e.value)
    assert "'cost'" in msg
    for col in ("size", "rooms", "kind", "price", "sold"):
        assert repr(col) in msg
    with pytest.raises(DataError, match="'area'"):
        source(houses, features=["size", "area"]).describe()


def test_impute_mean_fills_train_mean(tmp_path):
    path = write(tmp_path / "i.csv", "a,b,y\n1,10,0\n2,,1\n3,30,0\n4,NA,1")
    src = CsvSource(path=path, targets={"y": "y"}, impute="mean", **whole(path))
    x = src.load()["train"].inputs["features"]
    by_a = {row[0]: row[1] for row in x.tolist()}
    assert by_a == {1.0: 10.0, 2.0: 20.0, 3.0: 30.0, 4.0: 20.0}  # mean of 10 and 30
    assert src.artifacts["impute"] == {"method": "mean", "values": [2.5, 20.0]}


def test_impute_zero(tmp_path):
    path = write(tmp_path / "z.csv", "a,y\n5,0\n,1")
    src = CsvSource(path=path, targets={"y": "y"}, impute="zero", **whole(path))
    x = src.load()["train"].inputs["features"]
    assert sorted(x[:, 0].tolist()) == [0.0, 5.0]


def test_explicit_val_and_test_files(tmp_path):
    train = write(tmp_path / "train.csv", "a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(8)))
    val = write(tmp_path / "val.csv", "a,y\n100,0\n101,1")
    test = write(tmp_path / "test.csv", "a,y\n200,1")
    splits = CsvSource(path=train, val_path=val, test_path=test, targets={"y": "y"}, kinds={"y": "binary"}).load()
    assert sorted(splits["train"].inputs["features"][:, 0].tolist()) == list(range(8))
    assert splits["val"].inputs["features"][:, 0].tolist() == [100, 101]
    assert splits["val"].targets["y"].tolist() == [0, 1]
    assert splits["test"].inputs["features"][:, 0].tolist() == [200]


def test_val_file_and_carved_test(tmp_path):
    train = write(tmp_path / "train.csv", "a,y\n" + "\n".join(f"{i},{i}" for i in range(10)))
    val = write(tmp_path / "val.csv", "a,y\n100,0")
    splits = CsvSource(path=train, val_path=val, targets={"y": "y"}, test_fraction=0.3).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 1, 3]


def test_fraction_split_sizes_exact_and_disjoint(tmp_path):
    path = write(tmp_path / "d.csv", "a,y\n" + "\n".join(f"{i},{i}" for i in range(20)))
    src = CsvSource(path=path, targets={"y": "y"}, val_fraction=0.25, test_fraction=0.1, split_seed=3)
    splits = src.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [13, 5, 2]
    seen = [v for s in splits.values() for v in s.inputs["features"][:, 0].tolist()]
    assert sorted(seen) == list(range(20))
    again = CsvSource(path=path, targets={"y": "y"}, val_fraction=0.25, test_fraction=0.1, split_seed=3).load()
    assert torch.equal(again["val"].inputs["features"], splits["val"].inputs["features"])


def test_bad_target_value_and_config_problems(tmp_path):
    path = write(tmp_path / "d.csv", "a,y\n1,maybe\n2,1")
    with pytest.raises(DataError, match=r"row 1.*'y'.*binary"):
        CsvSource(path=path, targets={"y": "y"}, kinds={"y": "binary"}).load()
    [p] = component_problems("data", {"name": "csv", "path": path, "kinds": {"y": "ordinal"}}, SOURCES)
    assert p.key == "data.kinds" and "entry 'y' ('ordinal'): not one of the allowed values" in p.message
    with pytest.raises(DataError, match="no targets"):
        CsvSource(path=path)
    with pytest.raises(DataError, match=r"data\.val_fraction \+ data\.test_fraction must be below 1") as e:
        CsvSource(path=path, targets={"y": "y"}, val_fraction=0.5, test_fraction=0.5)
    assert [q.key for q in e.value.problems] == ["data.test_fraction"]
    CsvSource(path=path, targets={"y": "y"}, val_path=path, val_fraction=0.5, test_fraction=0.5)  # val not carved


def test_missing_file_names_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        CsvSource(path="nope.csv", targets={"y": "y"}).describe()
    assert str(tmp_path / "nope.csv") in str(e.value)


def test_relative_path_and_tsv(tmp_path, monkeypatch):
    write(tmp_path / "d.tsv", "a\tb\ty\n1\t2\tcat\n3\t4\tdog")
    monkeypatch.chdir(tmp_path)
    ds = CsvSource(path="d.tsv", targets={"y": "y"}, exclude=["b"], **whole("d.tsv")).load()["train"]
    assert sorted(ds.inputs["features"][:, 0].tolist()) == [1.0, 3.0]
    assert ds.inputs["features"].shape == (2, 1)
    assert not math.isnan(float(ds.inputs["features"].sum()))
