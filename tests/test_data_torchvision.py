"""torchvision and multi_mnist sources on tiny fake datasets written in torchvision's layout."""

from __future__ import annotations

import struct

import pytest
import torch
from PIL import Image

from mtl_cli.config.checks import component_problems
from mtl_cli.data.sources import multi_mnist as mm
from mtl_cli.data.sources.multi_mnist import MultiMnistSource
from mtl_cli.data.sources.torchvision_sets import CELEBA_ATTRS, TorchvisionSource
from mtl_cli.errors import DataError
from mtl_cli.registry import SOURCES

N_TRAIN, N_TEST = 12, 6


def write_idx(path, data: torch.Tensor, magic: int) -> None:
    """An MNIST idx file: big-endian magic, dimension sizes, then the uint8 values."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in data.shape)
    path.write_bytes(header + data.numpy().tobytes())


def fake_mnist(root, name: str = "MNIST", seed: int = 0) -> dict[str, tuple]:
    """Random 28x28 uint8 images with labels i % 10 under root/<name>/raw/."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = (torch.arange(n) * 3 % 10).to(torch.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        out[prefix] = (images, labels.long())
    return out


@pytest.fixture
def mnist(tmp_path):
    return tmp_path, fake_mnist(tmp_path)


def test_registered():
    assert SOURCES.get("torchvision") is TorchvisionSource
    assert SOURCES.get("multi_mnist") is MultiMnistSource


# ---- missing files --------------------------------------------------------------------------


def test_missing_fashion_mnist_names_expected_files_and_fix(tmp_path):
    with pytest.raises(DataError) as e:
        TorchvisionSource(dataset="FashionMNIST", root=str(tmp_path)).load()
    msg = str(e.value)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert str(raw / "train-images-idx3-ubyte") in msg
    assert str(raw / "t10k-labels-idx1-ubyte") in msg
    assert "download=true" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_missing_cifar_and_relative_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        TorchvisionSource(dataset="CIFAR10", root="data/").load()
    assert str(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1") in str(e.value)


def test_unknown_dataset_lists_known():
    [p] = component_problems("data", {"name": "torchvision", "dataset": "SVHN"}, SOURCES)
    assert p.key == "data.dataset" and p.allowed == "'MNIST', 'FashionMNIST', 'CIFAR10', 'CIFAR100' or 'CelebA'"


def test_corrupt_idx_file_is_a_data_error(mnist):
    root, _ = mnist
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="could not read MNIST"):
        TorchvisionSource(dataset="MNIST", root=str(root)).load()


# ---- torchvision source ---------------------------------------------------------------------


def test_describe_is_static(tmp_path):
    # with download on, nothing is read: shapes and classes are known statically
    spec = TorchvisionSource(dataset="CIFAR100", root=str(tmp_path / "none"), download=True).describe()
    assert spec.targets["label"].num_classes == 100 and spec.inputs["image"].shape == (3, 32, 32)
    spec = TorchvisionSource(dataset="CelebA", root=str(tmp_path / "none"), download=True).describe()
    assert len(spec.targets) == 40 and spec.targets["smiling"].kind == "binary"
    assert spec.inputs["image"].shape == (3, 64, 64)
    spec = TorchvisionSource(dataset="FashionMNIST", root=str(tmp_path), download=True).describe()
    assert spec.targets["label"].class_names[0] == "T-shirt/top"
    assert spec.artifacts["label_maps"]["label"]["Ankle boot"] == 9


def test_describe_finds_missing_files_before_the_run(tmp_path):
    # with download off, validation (describe) already names the missing folder
    with pytest.raises(DataError) as e:
        TorchvisionSource(dataset="CIFAR100", root=str(tmp_path / "none")).describe()
    assert str(tmp_path / "none" / "cifar-100-python") in str(e.value)


def test_mnist_values_labels_and_val_carve(mnist):
    root, data = mnist
    splits = TorchvisionSource(dataset="MNIST", root=str(root), val_fraction=0.25).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [9, 3, 6]
    images, labels = data["t10k"]
    test = splits["test"]
    assert test.inputs["image"].shape == (6, 1, 28, 28)
    assert torch.equal(test.inputs["image"][:, 0], images.float() / 255)
    assert torch.equal(test.targets["label"], labels)
    # train + val are the training items, each once, image and label kept together
    images, labels = data["train"]
    seen = []
    for split in ("train", "val"):
        ds = splits[split]
        for x, y in zip(ds.inputs["image"][:, 0], ds.targets["label"]):
            k = int(((images.float() / 255 - x).abs().sum((1, 2)) == 0).nonzero())
            assert labels[k] == y
            seen.append(k)
    assert sorted(seen) == list(range(N_TRAIN))


def test_limit_and_resize(mnist):
    root, data = mnist
    splits = TorchvisionSource(
        dataset="MNIST", root=str(root), limit=8, test_limit=2, image_size=14, val_fraction=0.25
    ).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    x = splits["test"].inputs["image"]
    assert x.shape == (2, 1, 14, 14) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # downscaling keeps each image's mean brightness
    original = data["t10k"][0][:2].float().div(255)
    assert torch.allclose(x.mean((1, 2, 3)), original.mean((1, 2)), atol=0.01)
    assert torch.equal(splits["test"].targets["label"], data["t10k"][1][:2])


def test_celeba_lazy_samples(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CelebA, "_check_integrity", lambda self: True)  # no real md5s
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"00000{i}.jpg" for i in range(1, 7)]
    for i, n in enumerate(names):
        Image.new("RGB", (178, 218), (255, 0, 0) if i % 2 else (0, 0, 255)).save(
            base / "img_align_celeba" / n, quality=100
        )
    attrs = [[1 if (i + j) % 3 == 0 else -1 for j in range(40)] for i in range(6)]
    lines = [str(len(names)), " ".join(CELEBA_ATTRS) + " "]
    lines += [f"{n} " + " ".join(f"{a:2d}" for a in row) for n, row in zip(names, attrs)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {p}" for n, p in zip(names, (0, 0, 1, 1, 2, 2))) + "\n"
    )
    (base / "identity_CelebA.txt").write_text("\n".join(f"{n} 1" for n in names) + "\n")
    for fname, cols in (
        ("list_bbox_celeba.txt", "x_1 y_1 width height"),
        ("list_landmarks_align_celeba.txt", "a b c d e f g h i j"),
    ):
        k = len(cols.split())
        rows = [f"{n} " + " ".join(["1"] * k) for n in names]
        (base / fname).write_text("\n".join(["6", cols] + rows) + "\n")
    splits = TorchvisionSource(dataset="CelebA", root=str(tmp_path), image_size=8).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    sample = splits["train"][1]
    x = sample["inputs"]["image"]
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[0], torch.ones(8, 8), atol=0.02) and float(x[2].max()) < 0.02
    expected = [1.0 if (1 + j) % 3 == 0 else 0.0 for j in range(40)]
    got = [float(sample["targets"][a.lower()]) for a in CELEBA_ATTRS]
    assert got == expected and all(bool(m) for m in sample["masks"].values())
    assert float(splits["test"][1]["targets"]["5_o_clock_shadow"]) == 0.0  # row 5: 5 % 3 != 0
    assert float(splits["val"][1]["targets"]["5_o_clock_shadow"]) == 1.0  # row 3: 3 % 3 == 0


# ---- multi_mnist ----------------------------------------------------------------------------


def match_item(region: torch.Tensor, items: torch.Tensor) -> int:
    """Index of the only base item whose pixels equal ``region`` (items cropped the same way)."""
    hits = (items == region).flatten(1).all(1).nonzero().flatten()
    assert len(hits) == 1
    return int(hits)


def test_overlay_places_items():
    left = torch.zeros(1, 28, 28, dtype=torch.uint8)
    right = torch.zeros(1, 28, 28, dtype=torch.uint8)
    left[0, 0, 0], left[0, 27, 27], right[0, 0, 0], right[0, 27, 27] = 10, 50, 40, 30
    canvas = mm.overlay(left, right)[0]
    assert canvas.shape == (36, 36)
    assert canvas[0, 0] == 10 and canvas[33, 33] == 30
    assert canvas[6, 6] == 40  # right's top-left pixel over an empty left pixel
    assert canvas[27, 27] == 50  # overlap keeps the max (left 50 over right's 0)
    assert int((canvas > 0).sum()) == 4


def test_multi_mnist_labels_match_overlaid_items(mnist):
    root, data = mnist
    splits = MultiMnistSource(root=str(root), image_size=36, val_fraction=0.25, seed=1).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [9, 3, 6]
    for split, prefix in (("train", "train"), ("val", "train"), ("test", "t10k")):
        images, labels = data[prefix]
        ds = splits[split]
        canvas = (ds.inputs["image"][:, 0] * 255).round().to(torch.uint8)
        for c, yl, yr in zip(canvas, ds.targets["left"], ds.targets["right"]):
            # rows 0..5 hold only the left item; rows 28..33 (cols 6..33) only the right one
            li = match_item(c[0:6, 0:28], images[:, 0:6, :])
            ri = match_item(c[28:34, 6:34], images[:, 22:28, :])
            assert li != ri
            assert labels[li] == yl and labels[ri] == yr
            assert torch.equal(c, mm.overlay(images[li : li + 1], images[ri : ri + 1])[0])


def test_multi_mnist_each_item_left_once_and_val_disjoint(mnist):
    root, data = mnist
    splits = MultiMnistSource(root=str(root), image_size=36, val_fraction=0.25).load()
    images = data["train"][0]
    lefts = {}
    for split in ("train", "val"):
        canvas = (splits[split].inputs["image"][:, 0] * 255).round().to(torch.uint8)
        lefts[split] = {match_item(c[0:6, 0:28], images[:, 0:6, :]) for c in canvas}
        rights = {match_item(c[28:34, 6:34], images[:, 22:28, :]) for c in canvas}
        assert rights <= lefts[split]  # partners come from the same split
    assert sorted(lefts["train"] | lefts["val"]) == list(range(N_TRAIN))
    assert not lefts["train"] & lefts["val"]


def test_multi_mnist_seeded(mnist):
    root, _ = mnist
    a = MultiMnistSource(root=str(root), seed=3, val_fraction=0.25).load()
    b = MultiMnistSource(root=str(root), seed=3, val_fraction=0.25).load()
    c = MultiMnistSource(root=str(root), seed=4, val_fraction=0.25).load()
    for split in ("train", "val", "test"):
        assert torch.equal(a[split].inputs["image"], b[split].inputs["image"])
        assert torch.equal(a[split].targets["right"], b[split].targets["right"])
    assert not torch.equal(a["test"].inputs["image"], c["test"].inputs["image"])


def test_multi_mnist_default_size_is_nearest_resize(mnist):
    root, _ = mnist
    small = MultiMnistSource(root=str(root), seed=2, val_fraction=0.25).load()
    big = MultiMnistSource(root=str(root), seed=2, val_fraction=0.25, image_size=36).load()
    small, big = small["test"].inputs["image"], big["test"].inputs["image"]
    assert small.shape == (N_TEST, 1, 28, 28)
    # nearest resize only copies canvas pixels: every output value exists in its canvas
    for s, b in zip(small, big):
        assert set(s.unique().tolist()) <= set(b.unique().tolist())
    spec = MultiMnistSource(root=str(root)).describe()
    assert spec.targets["left"].num_classes == 10 and spec.inputs["image"].shape == (1, 28, 28)


def test_multi_fashion_missing_files_message(tmp_path):
    with pytest.raises(DataError) as e:
        MultiMnistSource(base="FashionMNIST", root=str(tmp_path)).load()
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in str(e.value)
    [p] = component_problems("data", {"name": "multi_mnist", "base": "CIFAR10"}, SOURCES)
    assert p.key == "data.base" and p.allowed == "'MNIST' or 'FashionMNIST'"


def test_multi_mnist_too_few_items(mnist):
    root, _ = mnist
    with pytest.raises(DataError, match="too few base items"):
        MultiMnistSource(root=str(root), train_size=3, val_fraction=0.34).load()


def test_multi_mnist_pairs_per_item_gives_each_item_that_many_partners(mnist):
    """pairs_per_item=2 (Pareto MTL's 120k/20k size): every base item is the left item of two
    samples with partners of their own (never itself), and the first half is the pairs=1 split."""
    root, data = mnist
    one = MultiMnistSource(root=str(root), image_size=36, val_fraction=0.25, seed=5).load()
    two = MultiMnistSource(root=str(root), image_size=36, val_fraction=0.25, seed=5, pairs_per_item=2).load()
    assert [len(two[s]) for s in ("train", "val", "test")] == [18, 6, 12]
    for split, prefix in (("train", "train"), ("val", "train"), ("test", "t10k")):
        n = len(one[split])
        assert torch.equal(two[split].inputs["image"][:n], one[split].inputs["image"])
        assert torch.equal(two[split].targets["right"][:n], one[split].targets["right"])
        images, labels = data[prefix]
        canvas = (two[split].inputs["image"][:, 0] * 255).round().to(torch.uint8)
        lefts = [match_item(c[0:6, 0:28], images[:, 0:6, :]) for c in canvas]
        rights = [match_item(c[28:34, 6:34], images[:, 22:28, :]) for c in canvas]
        assert lefts[:n] == lefts[n:] and len(set(lefts)) == n  # each item left of exactly 2 samples
        assert all(li != ri for li, ri in zip(lefts, rights))
        assert rights[:n] != rights[n:]  # the second partners are drawn afresh (seeded)
        assert [int(labels[i]) for i in lefts] == two[split].targets["left"].tolist()
        assert [int(labels[i]) for i in rights] == two[split].targets["right"].tolist()
