"""Real data files: nothing silently corrupted, every refusal names its cell.

One group of tests per mistake a new user made with CSV and image-manifest files, each on small
files generated here: images of every PIL mode with known pixel values (a 16-bit PNG among them),
a class only in the test rows, 1e300 and 1e30 cells, single-class and constant targets, a numeric
column with one text cell, an all-missing task, the smaller mistakes (fractions, a folder as the
file, Windows paths, huge images, the split record), categorical features one-hot encoded, and
mtl-report over repeated seeds and several experiments. Each refusal is checked for the file, the
row (1-based, with the file line), the column, the value and the fix.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mtl_cli.cli.train as cli
from mtl_cli.config.checks import Problems as ConfigProblems
from mtl_cli.config.locate import ENV, resume_command
from mtl_cli.data.base import DataSpec, InputSpec, TargetSpec, image_pixels, image_to_tensor, read_image_file
from mtl_cli.data.sources.csv import CsvSource
from mtl_cli.data.sources.image_manifest import ImageManifestSource
from mtl_cli.data.tabular import MAX_LISTED_ROWS
from mtl_cli.errors import DataError
from mtl_cli.tasks.kinds.binary import BinaryAUROC
from mtl_cli.tasks.kinds.classification import MulticlassAUROC
from mtl_cli.tasks.kinds.multilabel import MultilabelAUROC
from mtl_cli.tasks.kinds.regression import R2
from mtl_cli.validation.tasks import check_tasks

FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.progress=false",
    "device=cpu",
]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def numbers_csv(tmp: Path, name: str = "d.csv", n: int = 30, cell=None) -> str:
    """``n`` rows: features a, b and a regression target y (y = 3a); ``cell(i) -> (column, text)``
    replaces one cell of row i (0-based)."""
    lines = ["a,b,y"]
    for i in range(n):
        row = {"a": str(i), "b": str(2 * i), "y": str(3 * i)}
        if cell is not None and cell(i) is not None:
            col, text = cell(i)
            row[col] = text
        lines.append(",".join(row[c] for c in ("a", "b", "y")))
    return write(tmp / name, lines)


def refused(make) -> str:
    with pytest.raises(DataError) as e:
        make()
    return str(e.value)


@pytest.fixture
def plain_cli(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites it for Hydra
    monkeypatch.chdir(tmp_path)


def run_cli(overrides: list[str], tmp_path: Path, capsys) -> tuple[int, str]:
    try:
        cli.main([*overrides, f"run_dir={tmp_path / 'run'}", *FAST])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


# ============================================================================ 1. image modes
def image_of(mode: str) -> tuple[Image.Image, list[float], list[list[float]]]:
    """A 3x1 image of ``mode`` with known pixels, and what a model must see: grayscale values
    (channels 1) and RGB triples (channels 3), in [0, 1]."""
    g = lambda *v: ([x / 255 for x in v], [[x / 255] * 3 for x in v])  # noqa: E731
    if mode == "1":
        img = Image.new("1", (3, 1))
        img.putpixel((1, 0), 1)
        img.putpixel((2, 0), 1)
        return img, *g(0, 255, 255)
    if mode == "L":
        return Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8), "L"), *g(0, 128, 255)
    if mode == "LA":
        img = Image.new("LA", (3, 1))
        for x, v in enumerate((0, 100, 255)):
            img.putpixel((x, 0), (v, 0 if x == 1 else 255))  # a transparent pixel keeps its gray: alpha dropped
        return img, *g(0, 100, 255)
    if mode == "P":
        img = Image.new("P", (3, 1))
        img.putpalette([0, 0, 0, 10, 20, 30, 255, 255, 255] + [0] * (256 * 3 - 9))
        for x in range(3):
            img.putpixel((x, 0), x)
        gray = [0, round(10 * 0.299 + 20 * 0.587 + 30 * 0.114), 255]  # ITU-R 601-2 luma, as PIL converts
        return img, [v / 255 for v in gray], [[0, 0, 0], [10 / 255, 20 / 255, 30 / 255], [1, 1, 1]]
    if mode in ("RGB", "RGBA"):
        px = [(255, 0, 0), (0, 128, 0), (10, 20, 30)]
        img = Image.new(mode, (3, 1))
        for x, p in enumerate(px):
            img.putpixel((x, 0), p + ((0,) if mode == "RGBA" else ()))  # alpha 0: dropped, colour kept
        gray = [round(r * 0.299 + gg * 0.587 + b * 0.114) for r, gg, b in px]
        return img, [v / 255 for v in gray], [[c / 255 for c in p] for p in px]
    if mode == "CMYK":
        img = Image.new("CMYK", (3, 1))
        for x, p in enumerate([(0, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 255)]):
            img.putpixel((x, 0), p)  # white, red, black
        return img, [1.0, round(255 * 0.299) / 255, 0.0], [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    if mode in ("I;16", "I;16B"):
        arr = np.array([[0, 257, 32768]], dtype=np.uint16 if mode == "I;16" else ">u2")
        img = Image.fromarray(arr.astype(np.uint16)) if mode == "I;16" else Image.frombytes(mode, (3, 1), arr.tobytes())
        return img, *_wide([0, 257, 32768], 65535)
    if mode == "I":
        return Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32)), *_wide([0, 1000, 65535], 65535)
    if mode == "F":
        return Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32)), *_wide([0.0, 0.25, 1.0], 1)
    raise AssertionError(mode)


def _wide(values, top):
    return [v / top for v in values], [[v / top] * 3 for v in values]


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_image_mode_gives_its_pixel_values(mode):
    img, gray, rgb = image_of(mode)
    assert img.mode == mode
    for channels, want in ((1, [[v] for v in gray]), (3, rgb)):
        x = image_pixels(img, channels)
        got = x.float() / 255 if x.dtype == torch.uint8 else x
        assert got.shape == (channels, 1, 3)
        assert torch.allclose(got[:, 0, :].T, torch.tensor(want, dtype=torch.float32), atol=1 / 255 + 1e-6), (
            mode,
            channels,
            got,
        )
        if x.dtype != torch.uint8:  # wide modes keep their precision: 257 / 65535 is not 1 / 255 of 8 bits
            assert torch.allclose(got[0, 0], torch.tensor(gray, dtype=torch.float32), atol=1e-6)


def test_16_bit_png_in_a_manifest_is_scaled_not_binarised(tmp_path):
    """The bug: PIL's conversion of a 16-bit PNG to 8 bits clips at 255, so 257 and 32768 became 1.0."""
    values = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    (tmp_path / "img").mkdir()
    lines = ["image,y"]
    for i in range(6):
        Image.fromarray(values).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{i % 2}")
    assert Image.open(tmp_path / "img" / "0.png").mode == "I;16"
    for channels in (1, 3):
        src = ImageManifestSource(
            path=write(tmp_path / "m.csv", lines), image_size=4, channels=channels, val_fraction=0.2, test_fraction=0.2
        )
        x = src.load()["train"].inputs["image"][0]  # 4x2 -> 4x4: rows repeat, columns exact
        assert x.shape == (channels, 4, 4)
        for c in range(channels):
            assert torch.allclose(x[c, 0], torch.tensor([0, 257, 32768, 65535]) / 65535, atol=1e-6)
            assert torch.allclose(x[c, 3], torch.tensor([1000, 20000, 40000, 60000]) / 65535, atol=1e-6)


def test_16_bit_image_for_an_8_bit_source_is_rounded_to_8_bits(tmp_path):
    """Other sources' prediction inputs (image_to_tensor: uint8): scaled, not clipped."""
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(tmp_path / "p.png")
    x = image_to_tensor(read_image_file(tmp_path / "p.png"), 1)
    assert x.dtype == torch.uint8 and x.reshape(-1).tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize("values", [[0, 70000], [-5, 100]], ids=["above 65535", "negative"])
def test_32_bit_integer_image_of_unknown_scale_is_refused(tmp_path, values):
    img = Image.fromarray(np.array([values], dtype=np.int32))
    msg = refused(lambda: image_pixels(img, 1, tmp_path / "x.tif", "manifest m.csv, row 4"))
    assert str(tmp_path / "x.tif") in msg and "row 4" in msg and "scale cannot be known" in msg
    assert "fix: save the image as 8- or 16-bit PNG" in msg


def test_float_image_outside_0_1_is_refused(tmp_path):
    img = Image.fromarray(np.array([[0.0, 2.5]], dtype=np.float32))
    msg = refused(lambda: image_pixels(img, 3, tmp_path / "x.tif"))
    assert "F image with pixel values from 0 to 2.5" in msg and "scale a float image to [0, 1]" in msg


# ============================================================================ 2. a class only in val/test
def test_csv_class_only_in_the_test_file_is_refused_naming_row_and_split(tmp_path):
    train = write(tmp_path / "train.csv", ["a,y", *[f"{i},{'ab'[i % 2]}" for i in range(10)]])
    test = write(tmp_path / "test.csv", ["a,y", "1,a", "2,castle", "3,b"])
    msg = refused(lambda: CsvSource(path=train, test_path=test, targets={"y": "y"}).describe())
    assert str(tmp_path / "test.csv") in msg
    assert "row 2 (line 3 of the file), column 'y': class 'castle' is in the test split but in no train row" in msg
    assert "(got 'castle')" in msg and "allowed: the train split's classes: a, b" in msg
    assert "++data.classes.y=[a,b,castle]" in msg


def test_csv_declared_class_keeps_the_others_indices(tmp_path):
    train = write(tmp_path / "train.csv", ["a,y", *[f"{i},{'ab'[i % 2]}" for i in range(10)]])
    test = write(tmp_path / "test.csv", ["a,y", "1,a", "2,castle", "3,b"])
    src = CsvSource(path=train, test_path=test, targets={"y": "y"}, classes={"y": ["a", "b", "castle"]})
    spec = src.describe()
    assert spec.targets["y"].num_classes == 3 and spec.artifacts["label_maps"]["y"] == {"a": 0, "b": 1, "castle": 2}
    assert src.load()["test"].targets["y"].tolist() == [0, 2, 1]


def test_csv_class_only_in_carved_val_rows_is_refused(tmp_path):
    # 10 rows, val = 1 carved row (seed 0): that row's class is the only "z"
    from mtl_cli.data.base import split_indices

    val_row = int(split_indices(10, 0.1, 0.0, 0)["val"][0])
    path = write(tmp_path / "d.csv", ["a,y", *[f"{i},{'z' if i == val_row else 'ab'[i % 2]}" for i in range(10)]])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, test_fraction=0).describe())
    assert f"row {val_row + 1} (line {val_row + 2} of the file)" in msg and "'z' is in the val split" in msg


def test_manifest_class_only_in_test_rows_is_refused_unless_declared(tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["image,colour,split"]
    for i in range(8):
        Image.new("RGB", (4, 4), (i * 30, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        split = "train" if i < 5 else "val" if i == 5 else "test"
        lines.append(f"img/{i}.png,{'red' if i < 5 else 'green' if i == 5 else 'blue'},{split}")
    path = write(tmp_path / "m.csv", lines)
    msg = refused(lambda: ImageManifestSource(path=path, image_size=4).describe())
    assert "row 6 (line 7 of the file), column 'colour': class 'green' is in the val split" in msg
    assert "row 7 (line 8 of the file), column 'colour': class 'blue' is in the test split" in msg
    assert "and 1 more row(s) alike" in msg  # row 8 is blue too
    src = ImageManifestSource(path=path, image_size=4, classes={"colour": ["red", "green", "blue"]})
    assert src.load()["test"].targets["colour"].tolist() == [2, 2]


def test_binary_value_only_in_val_rows_is_refused_unless_declared(tmp_path):
    train = write(tmp_path / "train.csv", ["a,y", *[f"{i},0" for i in range(8)]])
    val = write(tmp_path / "val.csv", ["a,y", "1,0", "2,yes"])
    kw = {"path": train, "val_path": val, "test_path": val, "targets": {"y": "y"}, "kinds": {"y": "binary"}}
    msg = refused(lambda: CsvSource(**kw).describe())
    assert str(tmp_path / "val.csv") in msg and "row 2 (line 3 of the file), column 'y'" in msg
    assert "the value 1 is in the val split but in no train row (every labelled train row is 0)" in msg
    assert "++data.classes.y=[0,1]" in msg
    ds = CsvSource(**kw, classes={"y": [0, 1]}).load()["val"]
    assert ds.targets["y"].tolist() == [0.0, 1.0]


# ============================================================================ 3. float32 range
def test_feature_finite_in_float64_but_not_float32_is_refused_naming_the_cell(tmp_path):
    path = numbers_csv(tmp_path, cell=lambda i: ("b", "1e300") if i == 4 else None)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}).load())
    assert str(tmp_path / "d.csv") in msg and "row 5 (line 6 of the file), column 'b'" in msg
    assert "too large for float32, the training dtype" in msg and "(got '1e300')" in msg and "fix:" in msg


def test_regression_target_whose_square_overflows_float32_is_refused(tmp_path):
    path = numbers_csv(tmp_path, cell=lambda i: ("y", "1e30") if i == 7 else None)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}).load())
    assert "row 8 (line 9 of the file), column 'y': regression target too large for float32 training" in msg
    assert "(got '1e30')" in msg and "allowed: numbers within ±1e+15" in msg and "fix: rescale the column" in msg


def test_standardisation_of_large_features_is_computed_in_float64(tmp_path):
    """1e20 fits float32, its square does not: float32 statistics gave std inf and features 0."""
    path = numbers_csv(tmp_path, cell=lambda i: ("b", f"{(i + 1) * 1e20:.6g}"))
    src = CsvSource(path=path, targets={"y": "y"}, standardize=True, val_path=path, test_path=path)
    x = src.load()["train"].inputs["features"]
    assert torch.isfinite(x).all()
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5) and torch.allclose(
        x.std(0, unbiased=False), torch.ones(2)
    )


# ============================================================================ 4. single class, undefined metrics
def test_single_class_target_is_refused_at_validation(tmp_path, plain_cli, capsys):
    write(tmp_path / "d.csv", ["x1,x2,label", *[f"{i},{i / 2},a" for i in range(12)]])
    code, err = run_cli(
        ["experiment=tabular", "data.path=d.csv", "data.targets={label: label}", "+tasks.label.kind=classification"],
        tmp_path,
        capsys,
    )
    assert code == 2 and "Traceback" not in err, err
    assert str(tmp_path / "d.csv") in err and "every labelled train row has the class 'a'" in err
    assert "a classifier needs at least two classes" in err and "fix:" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any epoch


def test_single_value_binary_target_is_refused(tmp_path):
    path = write(tmp_path / "d.csv", ["a,y", *[f"{i},1" for i in range(10)]])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, kinds={"y": "binary"}).describe())
    assert "every labelled train row is 1" in msg and "AUROC is undefined" in msg


def test_segmentation_masks_of_one_class_are_refused(tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["image,seg"]
    for i in range(4):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{i}.png")
        Image.new("L", (4, 4), 0).save(tmp_path / "img" / f"{i}_m.png")
        lines.append(f"img/{i}.png,img/{i}_m.png")
    msg = refused(lambda: ImageManifestSource(path=write(tmp_path / "m.csv", lines), image_size=4).describe())
    assert "column 'seg' (target 'seg'): every mask holds class 0 only" in msg


def test_a_task_of_fewer_than_two_classes_is_refused_at_validation():
    spec = DataSpec({"x": InputSpec("x", (3,), "tabular")}, {"t": TargetSpec("t", "classification", (), 1, ["a"])})
    p = ConfigProblems()
    check_tasks(p, {"t": {"kind": "classification"}}, {"data": spec}, {"head": {}})
    [q] = [q for q in p.items if q.key == "tasks.t.num_classes"]
    assert "needs at least two classes" in q.message and q.value == 1


def test_undefined_metrics_are_nan_not_zero():
    auroc = BinaryAUROC()
    auroc.update(torch.tensor([0.2, 0.9, 0.4]), torch.tensor([1, 1, 1]))  # one class present
    assert math.isnan(float(auroc.compute()))
    r2 = R2()
    r2.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([5.0, 5.0, 5.0]))  # constant target
    assert math.isnan(float(r2.compute()))
    r2 = R2()
    r2.update(torch.tensor([1.0]), torch.tensor([2.0]))  # one sample
    assert math.isnan(float(r2.compute()))
    # defined cases keep torchmetrics' values
    import torchmetrics.classification as tmc
    import torchmetrics.regression as tmr

    g = torch.Generator().manual_seed(0)
    y, p = torch.randn(40, generator=g), torch.randn(40, generator=g)
    ours, theirs = R2(), tmr.R2Score()
    ours.update(p + y, y)
    theirs.update(p + y, y)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), abs=1e-5)
    # multiclass: a class absent from the targets is left out of the mean (torchmetrics counts it as 0)
    probs = torch.softmax(torch.randn(8, 3, generator=g), 1)
    target = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])
    per = tmc.MulticlassAUROC(3, average="none")
    per.update(probs, target)
    mc = MulticlassAUROC(3)
    mc.update(probs, target)
    assert float(mc.compute()) == pytest.approx(float(per.compute()[:2].mean()))
    scores, labels = torch.rand(4, 2, generator=g), torch.tensor([[0, 1], [0, 0], [0, 1], [0, 0]])  # label 0: no 1
    ml = MultilabelAUROC(2)
    ml.update(scores, labels)
    per = tmc.MultilabelAUROC(2, average="none")
    per.update(scores, labels)
    assert float(ml.compute()) == pytest.approx(float(per.compute()[1]))


# ============================================================================ 5. kind inference
def test_numeric_column_with_one_text_cell_names_the_cell_and_suggests_data_kinds(tmp_path):
    path = numbers_csv(tmp_path, cell=lambda i: ("y", "abc") if i == 6 else None)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}).describe())
    assert str(tmp_path / "d.csv") in msg and "row 7 (line 8 of the file), column 'y'" in msg
    assert "not a number, in a column that looks numeric (29 of its 30 labels are numbers)" in msg
    assert "(got 'abc')" in msg and "++data.kinds.y=regression" in msg
    assert "which is classification" not in msg
    # the fix that works: declared regression, the cell is then named as a bad regression label
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, kinds={"y": "regression"}).load())
    assert "row 7 (line 8 of the file), column 'y': not a valid regression label" in msg


@pytest.mark.parametrize(
    "text,hint", [("inf", "not a finite number"), ("3,5", "a decimal comma? write 3.5")], ids=["inf", "comma"]
)
def test_inf_and_decimal_comma_cells_are_named_with_a_hint(tmp_path, text, hint):
    lines = ["a;y", *[f"{i};{text if i == 2 else i}" for i in range(12)]]
    path = write(tmp_path / "d.csv", lines)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, delimiter=";").describe())
    assert "row 3 (line 4 of the file), column 'y'" in msg and hint in msg and f"(got '{text}')" in msg


def test_header_parsed_as_one_column_suggests_the_delimiter(tmp_path):
    path = write(tmp_path / "d.csv", ["a;b;y", *[f"{i};{i};{i}" for i in range(5)]])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}).describe())
    assert "column 'y' (from data.targets) is not in the header" in msg
    assert "the file looks ';'-separated" in msg and "data.delimiter=';'" in msg
    rows = write(tmp_path / "e.csv", ["a;b;y", *[f"{i};{i},5;{i}" for i in range(5)]])  # decimal commas split rows
    msg = refused(lambda: CsvSource(path=rows, targets={"y": "y"}).describe())
    assert "has 2 fields, the header has 1; and 4 more row(s) alike" in msg and "data.delimiter=';'" in msg


def test_kind_mismatch_fix_names_data_kinds(tmp_path, plain_cli, capsys):
    write(tmp_path / "d.csv", ["x,code", *[f"{i},{i % 3}" for i in range(12)]])
    code, err = run_cli(
        ["experiment=tabular", "data.path=d.csv", "data.targets={code: code}", "+tasks.code.kind=classification"],
        tmp_path,
        capsys,
    )
    assert code == 2, err
    assert "a classification task cannot learn target 'code', which is regression" in err
    assert "++data.kinds.code=classification" in err


# ============================================================================ 6. all-missing task
@pytest.mark.parametrize("kind", ["classification", "regression", "binary"])
def test_target_without_any_label_is_refused_even_when_its_kind_is_declared(tmp_path, kind):
    path = write(tmp_path / "d.csv", ["a,y", *[f"{i},{'NA' if i % 2 else ''}" for i in range(10)]])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, kinds={"y": kind}).describe())
    assert str(tmp_path / "d.csv") in msg
    assert "column 'y' (target 'y'): every cell of the column is empty (or NA) in every split (10 rows)" in msg
    assert "remove the target from data.targets" in msg


def test_target_labelled_only_outside_train_is_refused(tmp_path):
    train = write(tmp_path / "train.csv", ["a,y", *[f"{i}," for i in range(6)]])
    val = write(tmp_path / "val.csv", ["a,y", "1,2.5"])
    msg = refused(lambda: CsvSource(path=train, val_path=val, test_path=val, targets={"y": "y"}).describe())
    assert "no train row has a label (6 rows" in msg and "val 1" in msg


def test_manifest_mask_column_without_any_mask_is_refused(tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["image,colour,depth"]
    for i in range(6):
        Image.new("RGB", (4, 4)).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{'ab'[i % 2]},")
    path = write(tmp_path / "m.csv", lines)
    msg = refused(lambda: ImageManifestSource(path=path, image_size=4, kinds={"depth": "dense_regression"}).describe())
    assert "column 'depth' (target 'depth')" in msg and "empty" in msg


@pytest.mark.parametrize("inline", [True, False], ids=["task on the command line", "task from a YAML"])
def test_num_classes_hint_works_for_inline_tasks(inline):
    spec = DataSpec({"x": InputSpec("x", (3,), "tabular")}, {"t": TargetSpec("t", "multilabel", (4,))})
    node = {"kind": "multilabel"} if inline else {"kind": "multilabel", "num_classes": None}
    p = ConfigProblems()
    check_tasks(p, {"t": node}, {"data": spec}, {"head": {}})
    [q] = [q for q in p.items if q.key == "tasks.t.num_classes"]
    assert q.fix == ("set +tasks.t.num_classes=<n>" if inline else "set tasks.t.num_classes=<n>")


# ============================================================================ 7. the smaller ones
def test_fractions_that_leave_no_train_row_say_lower(tmp_path):
    path = write(tmp_path / "d.csv", ["a,y", "1,2", "2,3"])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, val_fraction=0.3, test_fraction=0.3).describe())
    assert "split(s) train have no samples" in msg and "lower data.val_fraction / data.test_fraction" in msg
    assert "raise" not in msg


def test_exclude_beside_features_is_refused(tmp_path):
    path = numbers_csv(tmp_path)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, features=["a"], exclude=["b"]))
    assert "data.exclude: has no effect beside an explicit data.features list" in msg and "(got ['b'])" in msg


def test_a_folder_given_as_the_file_is_named_as_a_folder(tmp_path):
    numbers_csv(tmp_path)
    msg = refused(lambda: CsvSource(path=str(tmp_path), targets={"y": "y"}).describe())
    assert f"{tmp_path}: is a folder, not a file" in msg and f"e.g. {tmp_path / 'd.csv'}" in msg
    assert "file not found" not in msg
    (tmp_path / "img" / "sub").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "0.png")
    manifest = write(tmp_path / "m.csv", ["image,y", "img/0.png,1", "img/sub,2", "img/0.png,3", "img/0.png,4"])
    msg = refused(
        lambda: ImageManifestSource(path=manifest, image_size=4, val_fraction=0.25, test_fraction=0.25).load()
    )
    assert f"{tmp_path / 'img' / 'sub'}: is a folder, not an image file (manifest {manifest}, row 2" in msg


def test_windows_paths_in_a_manifest(tmp_path):
    (tmp_path / "img").mkdir()
    lines = ["image,y"]
    for i in range(6):
        Image.new("L", (4, 4), 40 * i).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img\\{i}.png,{i}")  # relative, with backslashes: read with /
    src = ImageManifestSource(
        path=write(tmp_path / "m.csv", lines), image_size=4, channels=1, val_fraction=0.2, standardize_targets=False
    )
    splits = src.load()
    for ds in splits.values():
        assert torch.allclose(ds.inputs["image"][:, 0, 0, 0] * 255, ds.targets["y"] * 40, atol=1e-3)
    lines = ["image,y"] + [f"C:\\Users\\me\\data\\{i}.png,{i}" for i in range(6)]
    msg = refused(lambda: ImageManifestSource(path=write(tmp_path / "w.csv", lines), image_size=4).load())
    assert msg.count("a Windows absolute path") == 1 and "and 5 more row(s) alike" in msg
    assert "write the paths relative to the manifest's folder" in msg


def test_decompression_bomb_warning_is_logged_naming_the_file(tmp_path, monkeypatch, caplog, recwarn):
    Image.new("L", (4, 4)).save(tmp_path / "big.png")
    Image.new("L", (8, 8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        img = read_image_file(tmp_path / "big.png", "manifest m.csv, row 3")
    assert img.size == (4, 4)
    assert any(str(tmp_path / "big.png") in r.getMessage() and "row 3" in r.getMessage() for r in caplog.records)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]  # not printed raw
    msg = refused(lambda: read_image_file(tmp_path / "huge.png"))
    assert "image too large to decode safely" in msg and "fix: downscale the image" in msg


def test_split_rows_are_recorded_so_others_can_rebuild_them(tmp_path):
    path = numbers_csv(tmp_path, n=40)
    src = CsvSource(path=path, targets={"y": "y"}, val_fraction=0.2, test_fraction=0.1, split_seed=7)
    splits = src.load()
    record = json.loads(json.dumps(src.artifacts["split"]))  # what data.json holds
    assert record["seed"] == 7 and record["fractions"] == {"val": 0.2, "test": 0.1}
    assert set(record["files"]) == {str(tmp_path / "d.csv")} and len(record["files"][str(tmp_path / "d.csv")]) == 64
    for s in ("val", "test"):
        rows = record[s]["row_numbers"]  # 1-based data rows: row r has a = r - 1
        assert [r - 1 for r in rows] == splits[s].inputs["features"][:, 0].int().tolist()
        assert record[s]["rows"] == len(splits[s])
    assert "row_numbers" not in record["train"] and record["train"]["rows"] == 28
    assert MAX_LISTED_ROWS >= 100_000


def test_data_json_of_a_run_records_the_split(tmp_path, plain_cli, capsys):
    write(tmp_path / "d.csv", ["x1,x2,label", *[f"{i},{i / 2},{'ab'[i % 2]}" for i in range(20)]])
    code, err = run_cli(
        ["experiment=tabular", "data.path=d.csv", "data.targets={label: label}", "+tasks.label.kind=classification"],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["split"]["val"]["rows"] == 2 and len(info["split"]["val"]["row_numbers"]) == 2
    assert info["split"]["files"][str(tmp_path / "d.csv")]


def _fake_run(tmp_path: Path, overrides: list[str]) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return run


def test_repeating_the_original_command_with_resume_keeps_plus_overrides_valid(tmp_path, monkeypatch):
    """``mtl-train <the same overrides> resume=<run>`` replays overrides.yaml, then the command
    line: a ``+key=value`` given twice makes Hydra refuse ("An item is already at ...")."""
    original = ["experiment=tabular", "data.path=d.csv", "+tasks.label.kind=classification"]
    run = _fake_run(tmp_path, [*original, f"run_dir={tmp_path / 'run'}"])
    monkeypatch.chdir(tmp_path)
    argv = cli.replay_resume([*original, f"resume={run}"])
    adds = [a for a in argv if a.startswith("+") and not a.startswith("++")]
    assert len(adds) == len({a.split("=", 1)[0] for a in adds}), argv


# ============================================================================ 8. categorical features
@pytest.fixture
def shops(tmp_path):
    """20 rows: a number, a categorical city (three cities in train), sales; 'tokyo' only in val.csv."""
    cities = ["paris", "rome", "oslo"]
    train = write(
        tmp_path / "train.csv", ["size,city,sales", *[f"{i},{cities[i % 3]},{10 * i + i % 3}" for i in range(20)]]
    )
    val = write(tmp_path / "val.csv", ["size,city,sales", "1,rome,5", "2,tokyo,6", "3,,7"])
    return train, val


def test_categorical_column_is_one_hot_with_train_categories(shops, caplog):
    train, val = shops
    src = CsvSource(
        path=train, val_path=val, test_path=val, targets={"sales": "sales"}, categorical=["city"], impute="mean"
    )
    spec = src.describe()
    assert spec.inputs["features"].shape == (4,)
    assert spec.artifacts["categories"] == {"city": ["oslo", "paris", "rome"]}
    assert spec.artifacts["feature_names"] == ["size", "city=oslo", "city=paris", "city=rome"]
    with caplog.at_level(logging.WARNING, logger="mtl_cli"):
        splits = src.load()
    x = splits["train"].inputs["features"]
    assert x[:3].tolist() == [[0, 0, 1, 0], [1, 0, 0, 1], [2, 1, 0, 0]]  # paris, rome, oslo
    v = splits["val"].inputs["features"]
    assert v[0].tolist() == [1, 0, 0, 1]  # rome
    assert v[1].tolist() == [2, 0, 0, 0]  # tokyo: not a train category -> all zeros, with a warning
    freq = [6 / 20, 7 / 20, 7 / 20]  # oslo, paris, rome (6, 7 and 7 of the 20 train rows)
    assert torch.allclose(v[2, 1:], torch.tensor(freq))  # missing + impute=mean: the train frequencies
    assert any("'tokyo' (2 rows)" in r.getMessage() and "all zeros" in r.getMessage() for r in caplog.records)


def test_standardize_leaves_one_hot_inputs_0_1(shops):
    train, val = shops
    src = CsvSource(
        path=train, val_path=val, targets={"sales": "sales"}, categorical=["city"], standardize=True, impute="zero"
    )
    x = src.load()["train"].inputs["features"]
    assert set(x[:, 1:].unique().tolist()) == {0.0, 1.0}
    assert abs(float(x[:, 0].mean())) < 1e-5
    assert src.artifacts["standardize"]["mean"][1:] == [0.0, 0.0, 0.0]
    assert src.artifacts["standardize"]["std"][1:] == [1.0, 1.0, 1.0]


def test_predict_inputs_use_the_runs_categories(shops, tmp_path):
    train, val = shops
    src = CsvSource(
        path=train, val_path=val, test_path=val, targets={"sales": "sales"}, categorical=["city"], impute="zero"
    )
    src.load()
    artifacts = json.loads(json.dumps(src.artifacts))  # as data.json holds them
    new = write(tmp_path / "new.csv", ["id,city,size", "a,oslo,4", "b,tokyo,5"])  # columns reordered, id ignored
    # a source whose files now hold other cities encodes with the run's categories, not its own
    other = write(tmp_path / "other.csv", ["size,city,sales", "1,x,1", "2,y,2", "3,x,3", "4,y,4"])
    prepared = CsvSource(path=other, targets={"sales": "sales"}, categorical=["city"]).prepare_inputs(
        [Path(new)], artifacts
    )
    assert prepared.inputs["features"].tolist() == [[4, 1, 0, 0], [5, 0, 0, 0]]


def test_categorical_column_must_be_a_feature(tmp_path):
    path = numbers_csv(tmp_path)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, categorical=["y"]))
    assert "data.categorical: column 'y' is a target column" in msg
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, features=["a"], categorical=["b"]))
    assert "column 'b' is not in data.features" in msg


def test_categorical_column_with_too_many_categories_is_refused(tmp_path, monkeypatch):
    import mtl_cli.data.tabular as tabular

    monkeypatch.setattr(tabular, "MAX_CATEGORIES", 5)
    path = numbers_csv(tmp_path)
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}, categorical=["a"]).describe())
    assert "categorical column 'a' has 24 categories in the train split" in msg and "an identifier" in msg


def test_non_numeric_feature_suggests_categorical(tmp_path):
    path = write(tmp_path / "d.csv", ["a,city,y", *[f"{i},{'xy'[i % 2]},{i}" for i in range(10)]])
    msg = refused(lambda: CsvSource(path=path, targets={"y": "y"}).load())
    assert "column 'city': feature value is not a number" in msg and "++data.categorical=[city]" in msg


def test_mtl_predict_encodes_a_csv_as_training_did(tmp_path, plain_cli, capsys):
    """A run with a categorical column; mtl-predict on the val file (columns reordered, an id
    added, one unseen city) gives the model's outputs on the val split's training features."""
    import mtl_cli.cli.predict as pr
    from mtl_cli.runs import load_run

    cities = ["paris", "rome", "oslo"]
    write(tmp_path / "d.csv", ["size,city,sales", *[f"{i},{cities[i % 3]},{10 * i + i % 3}" for i in range(40)]])
    write(tmp_path / "v.csv", ["size,city,sales", "1,rome,5", "2,tokyo,6", "3,oslo,7"])
    code, err = run_cli(
        [
            "experiment=tabular",
            "data.path=d.csv",
            "data.val_path=v.csv",
            "data.targets={sales: sales}",
            "++data.categorical=[city]",
            "+tasks.sales.kind=regression",
        ],
        tmp_path,
        capsys,
    )
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["categories"] == {"city": ["oslo", "paris", "rome"]} and info["features"] == ["size", "city"]
    write(tmp_path / "new.csv", ["id,city,size", "a,rome,1", "b,tokyo,2", "c,oslo,3"])
    pr.main([str(tmp_path / "run"), f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'p.jsonl'}"])
    got = [json.loads(line)["sales"]["value"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    loaded = load_run(tmp_path / "run")
    val = loaded.plan.source.load()["val"].inputs["features"]
    assert val[1, 1:].tolist() == [0.0, 0.0, 0.0]  # tokyo: no category
    with torch.no_grad():
        raw = loaded.model({"features": val})["sales"].reshape(-1)
    scale = info["target_scaling"]["sales"]  # the model learnt standardised sales; predictions are in sales
    want = (raw.double() * scale["std"] + scale["mean"]).tolist()
    assert got == pytest.approx(want, abs=1e-4)


# ============================================================================ 9. mtl-report
def report_run(d: Path, *, seed: int, weighting: str, acc: float, delta_m: float, task: str = "shape", data="shapes"):
    """A finished run directory as mtl-report reads it."""
    d.mkdir(parents=True)
    tasks = {task: {"kind": "classification", "role": "primary", "primary_metric": "accuracy", "directions": {}}}
    tasks[task]["directions"] = {"accuracy": "higher"}
    summary = {
        "objective": {"monitor": "mean_rel", "value": acc, "direction": "maximize"},
        "tasks": tasks,
        "test": {task: {"accuracy": acc, "loss": 1.0}},
        "delta_m": {"test": delta_m, "val": delta_m, "per_task": {}, "baseline_dir": f"/b/{data}"},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "overrides.yaml").write_text(f"- seed={seed}\n- weighting={weighting}\n- data={data}\n")
    config = {"seed": seed, "weighting": {"name": weighting}, "data": {"name": data}}
    (d / "config.yaml").write_text(json.dumps(config))


def mtl_report(paths: list[Path], out: Path, capsys) -> tuple[str, dict[str, dict[str, str]], str]:
    import csv as csv_mod

    from mtl_cli.cli.report import main as report_main

    report_main([*map(str, paths), "--out", str(out), "--no-plots"])
    text = capsys.readouterr().out
    with open(out / "report.csv", newline="") as f:
        rows = {r["group"]: r for r in csv_mod.DictReader(f)}
    return text, rows, (out / "report.md").read_text()


def test_report_counts_a_repeated_seed_once(tmp_path, capsys):
    report_run(tmp_path / "s" / "0", seed=0, weighting="ew", acc=0.5, delta_m=1.0)
    report_run(tmp_path / "s" / "1", seed=0, weighting="ew", acc=0.7, delta_m=3.0)  # seed 0 again
    report_run(tmp_path / "s" / "2", seed=0, weighting="uw", acc=0.6, delta_m=2.0)
    report_run(tmp_path / "s" / "3", seed=1, weighting="uw", acc=0.8, delta_m=4.0)
    text, rows, md = mtl_report([tmp_path / "s"], tmp_path / "out", capsys)
    ew, uw = rows["weighting=ew"], rows["weighting=uw"]
    assert ew["n"] == "1" and ew["seeds"] == "0×2"  # one seed: no standard deviation
    assert float(ew["shape/accuracy_mean"]) == pytest.approx(0.6) and ew["shape/accuracy_std"] == ""
    assert ew["delta_m_n"] == "1" and float(ew["delta_m_mean"]) == pytest.approx(2.0)
    assert uw["n"] == "2" and uw["seeds"] == "0,1" and float(uw["shape/accuracy_std"]) == pytest.approx(0.1414, 1e-3)
    flat = " ".join(text.split())
    assert "note: n counts distinct seeds" in flat and "weighting=ew: seed 0 ×2" in flat
    assert "Note: n counts distinct seeds" in md


def test_report_ranks_delta_m_within_each_experiment_and_says_so(tmp_path, capsys):
    report_run(tmp_path / "a" / "0", seed=0, weighting="ew", acc=0.5, delta_m=1.0)
    report_run(tmp_path / "a" / "1", seed=0, weighting="uw", acc=0.6, delta_m=2.0)
    report_run(tmp_path / "b" / "0", seed=0, weighting="ew", acc=0.9, delta_m=9.0, task="price", data="houses")
    report_run(tmp_path / "b" / "1", seed=0, weighting="uw", acc=0.9, delta_m=0.5, task="price", data="houses")
    text, rows, md = mtl_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", capsys)
    order = sorted(rows.values(), key=lambda r: int(r["rank"]))
    assert [(r["group"], r["experiment"]) for r in order] == [
        ("weighting=uw data=shapes", "E1"),
        ("weighting=ew data=shapes", "E1"),
        ("weighting=ew data=houses", "E2"),  # Δm 9 is not "better" than the other experiment's 2
        ("weighting=uw data=houses", "E2"),
    ]
    flat = " ".join(text.split())
    assert "these runs come from 2 experiments" in flat and "Δm of different experiments do not compare" in flat
    assert "E1 (rows 1-2): tasks shape on data shapes" in flat and "E2 (rows 3-4): tasks price on data houses" in flat
    assert "Note: these runs come from 2 experiments" in md


def test_report_of_one_experiment_has_no_experiment_note(tmp_path, capsys):
    report_run(tmp_path / "a" / "0", seed=0, weighting="ew", acc=0.5, delta_m=1.0)
    report_run(tmp_path / "a" / "1", seed=1, weighting="ew", acc=0.6, delta_m=2.0)
    text, rows, _ = mtl_report([tmp_path / "a"], tmp_path / "out", capsys)
    assert "note:" not in text and rows["mtl"]["experiment"] == "" and rows["mtl"]["n"] == "2"


def test_the_resume_hint_names_the_config_dirs_the_run_was_started_with(tmp_path, monkeypatch):
    """An interrupted run says how to continue it; with user config directories (``--config-dir``,
    kept in the environment) the command must name them, or ``experiment=<user's>`` is not found."""
    mine = tmp_path / "my conf"
    mine.mkdir()
    monkeypatch.setenv(ENV, str(mine))
    assert resume_command(tmp_path / "run") == f"mtl-train --config-dir '{mine}' resume={tmp_path / 'run'}"
    monkeypatch.delenv(ENV)
    assert resume_command("r") == "mtl-train resume=r"
