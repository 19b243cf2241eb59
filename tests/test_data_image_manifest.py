"""The image_manifest data source: decoded pixel values, label kinds, masks, splits, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from mtl_cli.data.sources.image_manifest import ImageManifestSource
from mtl_cli.errors import DataError
from mtl_cli.registry import SOURCES

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def solid(path, rgb, size=(12, 8)):
    Image.new("RGB", size, rgb).save(path)


def mask_png(path, left: int, right: int, size=(12, 8)):
    """Palette PNG whose left half has value ``left`` and right half ``right``."""
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    arr[:, : size[0] // 2] = left
    arr[:, size[0] // 2 :] = right
    img = Image.fromarray(arr, mode="L").convert("P")
    img.save(path)


def depth_png(path, value: int, size=(12, 8)):
    """16-bit grayscale PNG of one value."""
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16)).save(path)


@pytest.fixture
def manifest(tmp_path):
    """Six rows: colour class, a number, a segmentation mask and a depth map per image."""
    (tmp_path / "img").mkdir()
    lines = ["image,colour,brightness,seg,depth,split"]
    rows = [
        ("red", 1.0, 1, 2, 65535, "train"),
        ("green", 0.5, 0, 1, 0, "train"),
        ("blue", 0.25, 2, 2, 32768, "train"),
        ("red", "", 1, 1, 100, "val"),
        ("green", 0.5, "", "", "", "test"),
        ("blue", 0.1, 0, 0, 7, "train"),
    ]
    for i, (colour, bright, seg_l, seg_r, depth, split) in enumerate(rows):
        solid(tmp_path / "img" / f"{i}.png", COLOURS[colour])
        seg = depth_name = ""
        if seg_l != "":
            seg = f"img/{i}_seg.png"
            mask_png(tmp_path / seg, seg_l, seg_r)
            depth_name = f"img/{i}_depth.png"
            depth_png(tmp_path / depth_name, depth)
        lines.append(f"img/{i}.png,{colour},{bright},{seg},{depth_name},{split}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.csv"


def src(manifest, **kw):
    kw.setdefault("kinds", {"depth": "dense_regression"})
    kw.setdefault("image_size", 4)
    return ImageManifestSource(path=str(manifest), **kw)


def test_registered():
    assert SOURCES.get("image_manifest") is ImageManifestSource


def test_describe_kinds_and_class_mapping(manifest):
    spec = src(manifest).describe()
    kinds = {n: t.kind for n, t in spec.targets.items()}
    assert kinds == {
        "colour": "classification",
        "brightness": "regression",
        "seg": "segmentation",
        "depth": "dense_regression",
    }
    assert spec.targets["colour"].class_names == ["blue", "green", "red"]
    assert spec.artifacts["label_maps"] == {"colour": {"blue": 0, "green": 1, "red": 2}}
    assert spec.targets["seg"].num_classes == 3  # largest mask value 2, scanned
    assert spec.targets["seg"].shape == (4, 4) and spec.targets["seg"].ignore_index == 255
    assert spec.targets["depth"].shape == (1, 4, 4)
    assert spec.inputs["image"].shape == (3, 4, 4)


def test_split_column_and_pixel_values(manifest):
    splits = src(manifest).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    train = splits["train"]
    img = train.inputs["image"]
    assert img.shape == (4, 3, 4, 4) and img.dtype == torch.float32
    # train rows in file order: red, green, blue, blue
    assert train.targets["colour"].tolist() == [2, 1, 0, 0]
    for k, channel in enumerate([0, 1, 2, 2]):
        expected = torch.zeros(3, 4, 4)
        expected[channel] = 1.0
        assert torch.allclose(img[k], expected, atol=1e-3)
    # regression targets are learnt z-scored with the train rows' mean and (population) std
    raw = torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=torch.float64)
    mean, std = raw.mean(), raw.std(unbiased=False)
    assert torch.allclose(train.targets["brightness"], ((raw - mean) / std).float(), atol=1e-6)
    scale = src(manifest).describe().artifacts["target_scaling"]["brightness"]
    assert scale == pytest.approx({"mean": 0.4625, "std": float(std)})
    unscaled = src(manifest, standardize_targets=False)
    assert torch.allclose(unscaled.load()["train"].targets["brightness"], raw.float())
    assert "target_scaling" not in unscaled.describe().artifacts
    assert unscaled.describe().targets["brightness"].scaling is None
    recorded = src(manifest)  # a finished run's data.json wins over what the source would compute
    recorded.use_recorded({"target_scaling": {"brightness": {"mean": 0.0, "std": 2.0}}})
    assert torch.allclose(recorded.load()["train"].targets["brightness"], (raw / 2).float())


def test_masks_are_class_indices_resized_nearest(manifest):
    train = src(manifest).load()["train"]
    seg = train.targets["seg"]
    assert seg.dtype == torch.int64 and seg.shape == (4, 4, 4)
    assert seg[0, :, :2].eq(1).all() and seg[0, :, 2:].eq(2).all()
    assert seg[1, :, :2].eq(0).all() and seg[1, :, 2:].eq(1).all()
    depth = train.targets["depth"]
    assert depth.shape == (4, 1, 4, 4)
    assert torch.allclose(depth[:, 0, 0, 0], torch.tensor([1.0, 0.0, 32768 / 65535, 7 / 65535]))


def test_missing_labels_masked(manifest):
    splits = src(manifest).load()
    val, test = splits["val"], splits["test"]
    assert not val.masks["brightness"][0] and val.masks["colour"][0] and val.masks["seg"][0]
    assert not test.masks["seg"][0] and not test.masks["depth"][0]
    assert test.targets["seg"][0].eq(255).all()
    assert torch.isnan(test.targets["depth"][0]).all()
    assert test.masks["colour"][0] and test.targets["colour"][0] == 1


def test_dense_missing_value_becomes_nan(manifest):
    train = src(manifest, dense_missing_value=0).load()["train"]
    assert torch.isnan(train.targets["depth"][1]).all()
    assert not torch.isnan(train.targets["depth"][0]).any()


def test_lazy_dataset_matches_cache(manifest):
    cached = src(manifest).load()["train"]
    lazy = src(manifest, cache=False).load()["train"]
    assert len(lazy) == 4
    for i in range(4):
        sample = lazy[i]
        assert torch.equal(sample["inputs"]["image"], cached.inputs["image"][i])
        for t in ("colour", "seg"):
            assert torch.equal(sample["targets"][t], cached.targets[t][i])
        assert bool(sample["masks"]["brightness"]) == bool(cached.masks["brightness"][i])


def test_declared_classes_order_and_unknown_label(manifest):
    spec = src(manifest, classes={"colour": ["red", "green", "blue"]}).describe()
    assert spec.artifacts["label_maps"]["colour"] == {"red": 0, "green": 1, "blue": 2}
    with pytest.raises(DataError) as e:
        src(manifest, classes={"colour": ["red", "green"]}).describe()
    msg = str(e.value)
    assert "'blue'" in msg and "row 3" in msg and "colour" in msg


def test_mask_value_outside_declared_classes(manifest):
    with pytest.raises(DataError, match=r"outside the classes.*\(got \[2\]\)"):
        src(manifest, classes={"seg": ["bg", "a"]}).load()


def test_grayscale_and_carved_splits(tmp_path):
    for i in range(10):
        Image.new("L", (5, 5), 20 * i).save(tmp_path / f"{i}.png")
    lines = ["file,y"] + [f"{i}.png,{i}" for i in range(10)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    source = ImageManifestSource(
        path=str(tmp_path / "m.csv"),
        image_column="file",
        channels=1,
        image_size=5,
        val_fraction=0.2,
        test_fraction=0.3,
        standardize_targets=False,  # labels as given: each must sit beside its own image
    )
    splits = source.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    for ds in splits.values():  # every image's value matches its label y = value / 20
        values = ds.inputs["image"][:, 0, 0, 0] * 255
        assert torch.allclose(values, ds.targets["y"] * 20, atol=1e-3)
    assert sorted(v for ds in splits.values() for v in ds.targets["y"].tolist()) == list(range(10))


def test_garbage_image_names_file_and_row(manifest):
    bad = manifest.parent / "img" / "2.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    with pytest.raises(DataError) as e:
        src(manifest).load()
    msg = str(e.value)
    assert str(bad) in msg and "row 3" in msg


def test_missing_image_and_missing_column(manifest):
    (manifest.parent / "img" / "0.png").unlink()
    with pytest.raises(DataError, match=r"0\.png: image file not found \(manifest .* row 1"):
        src(manifest).load()
    with pytest.raises(DataError, match=r"'picture'.*\n.*allowed: columns 'image', 'colour'"):
        src(manifest, image_column="picture").describe()


def test_image_size_applies(manifest):
    ds = src(manifest, image_size=7).load()["train"]
    assert ds.inputs["image"].shape == (4, 3, 7, 7)
    assert ds.targets["seg"].shape == (4, 7, 7)
    assert not math.isnan(float(ds.inputs["image"].sum()))
