"""Bad data end ``mtl-train`` with exit code 2 and a message naming the file, the key, the row or
column, the bad value and the fix; never a traceback.

One row per bad input: a function writes the files into the test's folder (the current
directory) and returns the command-line overrides. The real CLI runs in-process, so a problem
found only when the data is loaded (inside the trainer) is checked as well as one found while the
config is validated. ``{tmp}`` in the expected words stands for the test's folder.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mtl_cli.cli.train as cli
from mtl_cli.config.locate import ENV

FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.progress=false",
    "device=cpu",
]


# ---- tabular data (csv source, experiment=tabular) --------------------------------------------


def write_csv(tmp: Path, name: str = "d.csv", rows: list[str] | None = None, header: str = "x1,x2,label") -> str:
    """A small CSV: two numeric features and a class label, 10 rows unless ``rows`` is given."""
    if rows is None:
        rows = [f"{i},{i * 0.5},{'ab'[i % 2]}" for i in range(10)]
    (tmp / name).write_text("\n".join([header, *rows]) + "\n")
    return name


def tabular(path: str, *extra: str) -> list[str]:
    return [
        "experiment=tabular",
        f"data.path={path}",
        "data.targets={label: label}",
        "+tasks.label.kind=classification",
        *extra,
    ]


def csv_missing(tmp: Path) -> list[str]:
    return tabular("nope.csv")


def csv_val_file_missing(tmp: Path) -> list[str]:
    return tabular(write_csv(tmp), "data.val_path=no_val.csv")


def csv_empty(tmp: Path) -> list[str]:
    (tmp / "d.csv").write_text("")
    return tabular("d.csv")


def csv_header_only(tmp: Path) -> list[str]:
    return tabular(write_csv(tmp, rows=[]))


def csv_missing_target_column(tmp: Path) -> list[str]:
    return [
        "experiment=tabular",
        f"data.path={write_csv(tmp)}",
        "data.targets={label: kind}",
        "+tasks.label.kind=classification",
    ]


def csv_missing_feature_column(tmp: Path) -> list[str]:
    return tabular(write_csv(tmp), "data.features=[x1,x3]")


def csv_non_numeric_feature(tmp: Path) -> list[str]:
    rows = [f"{i},{'abc' if i == 2 else i},{'ab'[i % 2]}" for i in range(10)]
    return tabular(write_csv(tmp, rows=rows))


def csv_missing_feature_value(tmp: Path) -> list[str]:
    rows = [f"{'' if i == 1 else i},{i},{'ab'[i % 2]}" for i in range(10)]
    return tabular(write_csv(tmp, rows=rows))


def csv_ragged_row(tmp: Path) -> list[str]:
    rows = [f"{i},{i},{'ab'[i % 2]}" + (",7" if i == 4 else "") for i in range(10)]
    return tabular(write_csv(tmp, rows=rows))


def csv_binary_label_outside(tmp: Path) -> list[str]:
    rows = [f"{i},{i},{2 if i == 3 else i % 2}" for i in range(10)]
    return [
        "experiment=tabular",
        f"data.path={write_csv(tmp, rows=rows)}",
        "data.targets={label: label}",
        "data.kinds={label: binary}",
        "+tasks.label.kind=binary",
    ]


def csv_val_fraction_no_rows(tmp: Path) -> list[str]:
    return tabular(write_csv(tmp), "data.val_fraction=0.01")


def csv_not_utf8(tmp: Path) -> list[str]:
    (tmp / "d.csv").write_bytes("x1,x2,label\n1,2,caf\xe9\n".encode("latin-1"))
    return tabular("d.csv")


# ---- images listed in a manifest (image_manifest source) --------------------------------------

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_manifest(
    tmp: Path, n: int = 9, seg: bool = False, split: list[str] | None = None, mask_size: dict[int, int] | None = None
) -> str:
    """``n`` 8x8 PNGs under img/ and m.csv listing them with a colour class (and a mask); with 9
    rows every colour keeps a train row whichever rows are carved as val and test."""
    (tmp / "img").mkdir()
    names = list(COLOURS)
    header = ["image", "colour"] + (["seg"] if seg else []) + (["split"] if split else [])
    lines = [",".join(header)]
    for i in range(n):
        colour = names[i % 3]
        Image.new("RGB", (8, 8), COLOURS[colour]).save(tmp / "img" / f"{i}.png")
        row = [f"img/{i}.png", colour]
        if seg:
            side = (mask_size or {}).get(i, 8)
            arr = np.zeros((side, side), dtype=np.uint8)
            arr[:, side // 2 :] = 1
            Image.fromarray(arr, mode="L").save(tmp / "img" / f"{i}_seg.png")
            row.append(f"img/{i}_seg.png")
        if split:
            row.append(split[i])
        lines.append(",".join(row))
    (tmp / "m.csv").write_text("\n".join(lines) + "\n")
    return "m.csv"


def manifest(path: str, *extra: str, tasks: tuple[str, ...] = ("colour",)) -> list[str]:
    kinds = {"colour": "classification", "seg": "segmentation"}
    targets = ", ".join(f"{t}: {t}" for t in tasks)
    return [
        "data=image_manifest",
        f"data.path={path}",
        "data.image_size=8",
        "tasks=none",
        f"data.targets={{{targets}}}",
        *[f"+tasks.{t}.kind={kinds[t]}" for t in tasks],
        *extra,
    ]


def manifest_missing(tmp: Path) -> list[str]:
    return manifest("nope.csv")


def manifest_header_only(tmp: Path) -> list[str]:
    (tmp / "m.csv").write_text("image,colour\n")
    return manifest("m.csv")


def manifest_missing_image_column(tmp: Path) -> list[str]:
    return manifest(write_manifest(tmp), "data.image_column=picture")


def manifest_image_folder_missing(tmp: Path) -> list[str]:
    path = write_manifest(tmp)
    for f in (tmp / "img").iterdir():
        f.unlink()
    (tmp / "img").rmdir()
    return manifest(path)


def manifest_image_file_missing(tmp: Path) -> list[str]:
    path = write_manifest(tmp)
    (tmp / "img" / "2.png").unlink()
    return manifest(path)


def manifest_truncated_png(tmp: Path) -> list[str]:
    path = write_manifest(tmp)
    png = tmp / "img" / "1.png"  # a noisy 32x32 image (a few kB), cut in half: header fine, pixels not
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(png)
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    return manifest(path)


def manifest_text_named_png(tmp: Path) -> list[str]:
    path = write_manifest(tmp)
    (tmp / "img" / "3.png").write_text("not an image\n")
    return manifest(path)


def manifest_truncated_png_lazy(tmp: Path) -> list[str]:
    return [*manifest_truncated_png(tmp), "data.cache=false"]


def manifest_label_not_declared(tmp: Path) -> list[str]:
    return manifest(write_manifest(tmp), "data.classes={colour: [red, green]}")


def manifest_mask_wrong_size(tmp: Path) -> list[str]:
    return manifest(write_manifest(tmp, seg=True, mask_size={4: 16}), tasks=("seg",))


def manifest_split_without_train(tmp: Path) -> list[str]:
    return manifest(write_manifest(tmp, n=6, split=["val", "test", "val", "test", "val", "test"]))


# ---- torchvision layouts (torchvision and multi_mnist sources) --------------------------------


def write_idx(path: Path, data: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in data.shape)
    path.write_bytes(header + data.numpy().tobytes())


def fake_mnist(tmp: Path, bad_label: int | None = None) -> str:
    """A tiny MNIST (8 train, 4 test images) in torchvision's layout under mn/."""
    raw = tmp / "mn" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 8), ("t10k", 4)):
        labels = torch.arange(n, dtype=torch.uint8) % 10
        if bad_label is not None and prefix == "train":
            labels[5] = bad_label
        write_idx(raw / f"{prefix}-images-idx3-ubyte", torch.zeros(n, 28, 28, dtype=torch.uint8), 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
    return "mn"


def mnist_root_missing(tmp: Path) -> list[str]:
    return ["data=mnist", "data.root=nope", "tasks=label"]


def mnist_file_missing(tmp: Path) -> list[str]:
    root = fake_mnist(tmp)
    (tmp / root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    return ["data=mnist", f"data.root={root}", "tasks=label"]


def mnist_label_out_of_range(tmp: Path) -> list[str]:
    return ["data=mnist", f"data.root={fake_mnist(tmp, bad_label=12)}", "tasks=label"]


def multi_mnist_root_missing(tmp: Path) -> list[str]:
    return ["experiment=multi_mnist", "data.root=nope"]


def cifar_root_missing(tmp: Path) -> list[str]:
    return ["data=cifar10", "data.root=nope", "tasks=label"]


# (id, writes the bad input and returns the overrides, words that must all appear in stderr)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("csv file missing", csv_missing, ["{tmp}/nope.csv", "file not found", "fix: check the path"]),
    ("csv val file missing", csv_val_file_missing, ["{tmp}/no_val.csv", "file not found"]),
    ("csv empty file", csv_empty, ["{tmp}/d.csv", "file is empty", "fix: add a header row"]),
    ("csv header only", csv_header_only, ["{tmp}/d.csv", "no data rows", "fix: add"]),
    (
        "csv target column missing",
        csv_missing_target_column,
        ["{tmp}/d.csv", "column 'kind'", "data.targets", "allowed: columns 'x1', 'x2', 'label'"],
    ),
    (
        "csv feature column missing",
        csv_missing_feature_column,
        ["{tmp}/d.csv", "column 'x3'", "data.features", "allowed: columns 'x1', 'x2', 'label'"],
    ),
    (
        "csv non-numeric feature",
        csv_non_numeric_feature,
        [
            "{tmp}/d.csv",
            "row 3 (line 4 of the file)",
            "column 'x2'",
            "not a number",
            "(got 'abc')",
            "data.exclude=[x2]",
        ],
    ),
    (
        "csv missing feature value",
        csv_missing_feature_value,
        ["{tmp}/d.csv", "row 2", "column 'x1'", "missing feature value", "data.impute"],
    ),
    ("csv row with too many fields", csv_ragged_row, ["{tmp}/d.csv", "row 5", "has 4 fields", "the header has 3"]),
    (
        "csv binary label outside 0/1",
        csv_binary_label_outside,
        ["{tmp}/d.csv", "row 4", "column 'label'", "not a valid binary label", "(got '2')", "fix:"],
    ),
    (
        "csv val fraction gives no rows",
        csv_val_fraction_no_rows,
        ["{tmp}/d.csv", "val", "no samples", "data.val_fraction"],
    ),
    ("csv not utf-8", csv_not_utf8, ["{tmp}/d.csv", "not UTF-8", "fix: save the file as UTF-8"]),
    ("manifest missing", manifest_missing, ["{tmp}/nope.csv", "file not found"]),
    ("manifest header only", manifest_header_only, ["{tmp}/m.csv", "no data rows"]),
    (
        "manifest image column missing",
        manifest_missing_image_column,
        ["{tmp}/m.csv", "column 'picture'", "data.image_column", "allowed: columns 'image', 'colour'"],
    ),
    ("manifest image folder missing", manifest_image_folder_missing, ["{tmp}/img", "not found", "row 1"]),
    (
        "manifest row names a missing image",
        manifest_image_file_missing,
        ["{tmp}/img/2.png", "image file not found", "{tmp}/m.csv", "row 3", "column 'image'", "fix:"],
    ),
    (
        "manifest truncated png",
        manifest_truncated_png,
        ["{tmp}/img/1.png", "cannot decode image", "{tmp}/m.csv", "row 2", "fix: replace the file"],
    ),
    (
        "manifest text file named png",
        manifest_text_named_png,
        ["{tmp}/img/3.png", "cannot decode image", "row 4", "fix: replace the file"],
    ),
    (
        "manifest truncated png, decoded lazily",
        manifest_truncated_png_lazy,
        ["{tmp}/img/1.png", "cannot decode image", "row 2"],
    ),
    (
        "manifest label outside declared classes",
        manifest_label_not_declared,
        [
            "{tmp}/m.csv",
            "row 3",
            "column 'colour'",
            "not among the declared classes",
            "(got 'blue')",
            "data.classes.colour",
        ],
    ),
    (
        "manifest mask of the wrong size",
        manifest_mask_wrong_size,
        ["{tmp}/img/4_seg.png", "16x16", "8x8", "row 5", "column 'seg'", "fix:"],
    ),
    (
        "manifest split column without train rows",
        manifest_split_without_train,
        ["{tmp}/m.csv", "train", "no samples", "split"],
    ),
    (
        "mnist root missing",
        mnist_root_missing,
        ["{tmp}/nope/MNIST/raw", "MNIST files not found", "train-images-idx3-ubyte", "data.download=true"],
    ),
    ("mnist file missing", mnist_file_missing, ["{tmp}/mn/MNIST/raw/t10k-labels-idx1-ubyte", "not found"]),
    (
        "mnist label outside the classes",
        mnist_label_out_of_range,
        ["{tmp}/mn/MNIST/raw/train-labels-idx1-ubyte", "12", "0..9"],
    ),
    ("multi_mnist root missing", multi_mnist_root_missing, ["{tmp}/nope/MNIST/raw", "MNIST files not found"]),
    (
        "cifar10 root missing",
        cifar_root_missing,
        ["{tmp}/nope/cifar-10-batches-py", "CIFAR10 files not found", "data_batch_1"],
    ),
]


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites it for Hydra
    monkeypatch.chdir(tmp_path)


def test_enough_cases():
    assert len(CASES) >= 16
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("write,words", [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_data(write, words, tmp_path, capsys):
    overrides = write(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main([*overrides, f"run_dir={tmp_path / 'run'}", *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "Traceback" not in err, err
    assert "Data error: " in err or "Config error: " in err, err  # after the run's log lines, if any
    assert "fix: " in err or "allowed: " in err, err
    assert "{tmp}" in words[0]  # each case names the file (or folder) at fault
    tmp = str(tmp_path.resolve())
    for w in words:
        w = w.replace("{tmp}", tmp)
        assert w in err, f"{w!r} not in:\n{err}"
