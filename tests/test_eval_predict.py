"""mtl-eval and mtl-predict on finished runs: evaluation reproduces the run's own numbers, data
overrides change the data (and only the data), a run directory cannot widen what its config may
import, and predictions are the model's outputs on inputs prepared the training way."""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_resume import BASE

import mtl_cli.cli.evaluate as ev
import mtl_cli.cli.predict as pr
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.data.base import split_indices
from mtl_cli.data.sources.shapes import ShapesSource
from mtl_cli.errors import DataError
from mtl_cli.runs import load_run
from mtl_cli.train.api import train

TOL = 1e-6


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _train(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    d = tmp_path_factory.mktemp(name) / "run"
    train(compose(overrides), d)
    return d


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """BASE: 3 epochs, the selected (best) epoch is 1, so best.pt and last.pt differ."""
    return _train(tmp_path_factory, "shapes", BASE)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    return _train(
        tmp_path_factory,
        "seg",
        BASE
        + [
            "backbone=small_cnn",
            "tasks.segmentation.enabled=true",
            "+tasks.depth.kind=dense_regression",
            "trainer.max_epochs=1",
            "data.train_size=32",
        ],
    )


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _eval(argv: list[str], capsys) -> tuple[dict, str]:
    ev.main([str(a) for a in argv])
    out = capsys.readouterr().out
    path = Path(out.strip().splitlines()[-1].split("written to ", 1)[1])
    return json.loads(path.read_text()), out


def _exit(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


def _assert_metrics_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for task, metrics in want.items():
        assert set(got[task]) == set(metrics), task
        for m, v in metrics.items():
            assert got[task][m] == pytest.approx(v, abs=TOL), (task, m)


# ---------------------------------------------------------------- mtl-eval
def test_eval_reproduces_the_summary_test_metrics_from_best(shapes_run, capsys):
    res, out = _eval([shapes_run], capsys)
    s = _summary(shapes_run)
    _assert_metrics_equal(res["metrics"], s["test"])
    assert res["checkpoint"] == str(shapes_run / "checkpoints" / "best.pt")
    assert res["epoch"] == s["selected_epoch"] == 1 and res["split"] == "test" and res["overrides"] == []
    assert res["samples"] == {"data": 32} and res["run_dir"] == str(shapes_run)
    assert (shapes_run / "eval" / "test-best.json").is_file()
    line = next(ln for ln in out.splitlines() if ln.startswith("shape "))  # the table shows the values
    assert "classification" in line and f"{s['test']['shape']['accuracy']:.4f}" in line


def test_val_of_best_and_last_match_the_selected_and_final_evaluations(shapes_run, capsys):
    s = _summary(shapes_run)
    assert s["selected_epoch"] < s["epochs"]  # so best.pt and last.pt hold different weights
    best, _ = _eval([shapes_run, "split=val"], capsys)
    last, _ = _eval([shapes_run, "split=val", "checkpoint=last"], capsys)
    _assert_metrics_equal(best["metrics"], s["val_selected"])
    _assert_metrics_equal(last["metrics"], s["val_final"])
    assert last["epoch"] == s["epochs"] and best["epoch"] == s["selected_epoch"]
    assert best["metrics"]["size"]["mae"] != pytest.approx(last["metrics"]["size"]["mae"], abs=1e-4)
    assert (shapes_run / "eval" / "val-last.json").is_file() and (shapes_run / "eval" / "val-best.json").is_file()


def test_a_limited_test_is_reproduced_with_limit(tmp_path_factory, capsys):
    run = _train(
        tmp_path_factory,
        "limited",
        BASE
        + ["trainer.max_epochs=1", "trainer.limit_test_batches=1", "trainer.eval_batch_size=8", "data.train_size=32"],
    )
    s = _summary(run)
    limited, _ = _eval([run, "limit=1"], capsys)
    whole, _ = _eval([run], capsys)
    _assert_metrics_equal(limited["metrics"], s["test"])
    assert limited["limit"] == 1 and whole["limit"] is None
    assert whole["metrics"]["size"]["mae"] != pytest.approx(s["test"]["size"]["mae"], abs=1e-4)  # 32 samples, not 8


def test_data_overrides_change_the_data_and_are_recorded(shapes_run, capsys):
    s = _summary(shapes_run)
    other, out = _eval([shapes_run, "data.seed=5", "data.test_size=10"], capsys)
    assert other["overrides"] == ["data.seed=5", "data.test_size=10"] and other["samples"] == {"data": 10}
    assert other["metrics"]["size"]["mae"] != pytest.approx(s["test"]["size"]["mae"], abs=1e-4)
    assert "overrides: data.seed=5 data.test_size=10" in out
    # the run's own values, given explicitly: the run's numbers again, in a file of their own
    same, _ = _eval([shapes_run, "data.seed=0"], capsys)
    _assert_metrics_equal(same["metrics"], s["test"])
    files = sorted(p.name for p in (shapes_run / "eval").glob("test-best-*.json"))
    assert len(files) == 2 and all(len(f) == len("test-best-12345678.json") for f in files)


def test_saved_allowed_targets_are_not_honoured(shapes_run, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    hostile = tmp_path / "hostile"
    (hostile / "checkpoints").mkdir(parents=True)
    cfg = yaml.safe_load((shapes_run / "config.yaml").read_text())
    cfg["allowed_targets"] = ["os"]
    cfg["optimizer"] = {"_target_": "os.system", "command": "touch pwned"}
    (hostile / "config.yaml").write_text(yaml.safe_dump(cfg))
    (hostile / "checkpoints" / "best.pt").write_bytes((shapes_run / "checkpoints" / "best.pt").read_bytes())
    # evaluation needs no optimizer: the saved optimizer node is neither imported nor called
    res, _ = _eval([hostile], capsys)
    _assert_metrics_equal(res["metrics"], _summary(shapes_run)["test"])
    assert calls == [] and not (tmp_path / "pwned").exists()


def test_allowed_targets_given_by_the_user_count(shapes_run, tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "lib" / "evalpkg_trusted"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "optim.py").write_text("import torch\n\nclass MySGD(torch.optim.SGD):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = yaml.safe_load((shapes_run / "config.yaml").read_text())
    cfg["allowed_targets"] = ["evalpkg_trusted"]
    cfg["optimizer"] = {"_target_": "evalpkg_trusted.optim.MySGD", "lr": 0.1}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "checkpoints" / "best.pt").write_bytes((shapes_run / "checkpoints" / "best.pt").read_bytes())
    res, _ = _eval([run], capsys)  # evaluation never imports the optimizer, allowed or not
    _assert_metrics_equal(res["metrics"], _summary(shapes_run)["test"])
    assert "evalpkg_trusted.optim" not in sys.modules
    res, _ = _eval([run, "allowed_targets=[evalpkg_trusted]"], capsys)
    _assert_metrics_equal(res["metrics"], _summary(shapes_run)["test"])


@pytest.mark.parametrize(
    "argv, words",
    [
        (["{tmp}/nowhere"], ["does not exist", "finished mtl-train run"]),
        (["{tmp}"], ["has no config.yaml"]),
        (["{run}", "checkpoint=newest"], ["unknown checkpoint name", "'newest'", "best, last"]),
        (["{run}", "checkpoint=gone/ep3.pt"], ["checkpoint file gone/ep3.pt does not exist"]),
        (["{run}", "split=dev"], ["split: unknown split", "test, val, train"]),
        (["{run}", "limit=0"], ["limit: expected an integer >= 1"]),
        (["{run}", "backbone.name=resnet18"], ["backbone.name: cannot be overridden here", "data.*"]),
        (["{run}", "data.train_sz=5"], ["data.train_sz", "unknown key"]),
        (["{run}", "data.seed=1,2"], ["several values"]),
        (["{run}", "{run}"], ["a second argument without key="]),
        (["{run}", "chekpoint=last"], ["unknown argument of mtl-eval", "did you mean checkpoint=...?"]),
        (["split=val"], ["<run dir>: missing"]),
    ],
)
def test_eval_errors_name_the_argument(shapes_run, tmp_path, capsys, argv, words):
    argv = [a.format(tmp=tmp_path, run=shapes_run) for a in argv]
    code, err = _exit(ev.main, argv, capsys)
    assert code == 2 and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert "fix:" in err


def test_eval_without_best_checkpoint_says_which_exist(shapes_run, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text((shapes_run / "config.yaml").read_text())
    (run / "checkpoints" / "last.pt").write_bytes((shapes_run / "checkpoints" / "last.pt").read_bytes())
    code, err = _exit(ev.main, [run], capsys)
    assert code == 2 and "the run has no checkpoints/best.pt" in err and "allowed: last.pt" in err


def test_help(capsys):
    for main, tool in ((ev.main, "mtl-eval"), (pr.main, "mtl-predict")):
        main(["--help"])
        out = capsys.readouterr().out
        assert out.startswith(f"usage: {tool} <run dir>") and "examples:" in out


# ---------------------------------------------------------------- mtl-predict
def _test_images(run: Path, n: int) -> torch.Tensor:
    """The run's first ``n`` test images, quantised to 8 bits (what a PNG holds)."""
    plan = load_run(run).plan
    return plan.source.load()["test"].inputs["image"][:n]


def _write_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(images):
        p = folder / f"img{i}.png"
        Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    return paths


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_png_files_equals_the_model_on_training_tensors(shapes_run, tmp_path, capsys):
    images = _test_images(shapes_run, 6)
    _write_pngs(images, tmp_path / "imgs")
    pr.main([str(shapes_run), f"input={tmp_path / 'imgs'}", f"output={tmp_path / 'p.csv'}"])
    out = capsys.readouterr().out
    rows = _read_csv(tmp_path / "p.csv")
    assert [Path(r["input"]).name for r in rows] == [f"img{i}.png" for i in range(6)]
    run = load_run(shapes_run)
    with torch.no_grad():
        quantised = run.model({"image": (images * 255).round() / 255})
        original = run.model({"image": images})
    names = ["circle", "square", "triangle", "cross"]
    probs = torch.softmax(quantised["shape"], 1)
    for i, r in enumerate(rows):
        assert r["shape.label"] == names[int(probs[i].argmax())] and int(r["shape.index"]) == int(probs[i].argmax())
        for k, n in enumerate(names):
            assert float(r[f"shape.probs.{n}"]) == pytest.approx(float(probs[i, k]), abs=1e-5)
        assert float(r["size.value"]) == pytest.approx(float(quantised["size"].reshape(-1)[i]), abs=1e-5)
        present = torch.sigmoid(quantised["present"][i])
        for k, n in enumerate(names):
            assert float(r[f"present.probs.{n}"]) == pytest.approx(float(present[k]), abs=1e-5)
            assert int(r[f"present.labels.{n}"]) == int(present[k] >= 0.5)
        # and a PNG holds the generated image up to 8-bit rounding: the same outputs, nearly
        assert float(r["size.value"]) == pytest.approx(float(original["size"].reshape(-1)[i]), abs=2e-2)
    assert "img0.png" in out and "written to" in out


def test_predict_jsonl_holds_the_csv_values(shapes_run, tmp_path, capsys):
    _write_pngs(_test_images(shapes_run, 3), tmp_path / "imgs")
    files = ",".join(str(tmp_path / "imgs" / f"img{i}.png") for i in (2, 0))  # an explicit list, in its order
    pr.main([str(shapes_run), f"input={files}", f"output={tmp_path / 'p.jsonl'}", "checkpoint=last"])
    pr.main([str(shapes_run), f"input={files}", f"output={tmp_path / 'p.csv'}", "checkpoint=last"])
    capsys.readouterr()
    recs = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    rows = _read_csv(tmp_path / "p.csv")
    assert [Path(r["input"]).name for r in recs] == ["img2.png", "img0.png"]
    for rec, row in zip(recs, rows):
        assert rec["shape"]["label"] == row["shape.label"]
        assert sum(rec["shape"]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert rec["size"]["value"] == pytest.approx(float(row["size.value"]), abs=1e-7)
        assert rec["present"]["labels"] == {
            k.split(".")[-1]: int(v) for k, v in row.items() if k.startswith("present.labels.")
        }


def test_predict_writes_segmentation_masks(seg_run, tmp_path, capsys):
    images = _test_images(seg_run, 3)
    _write_pngs(images, tmp_path / "imgs")
    x = (images * 255).round() / 255
    # one epoch predicts background everywhere: shift the head's "triangle" bias to the median
    # margin, so that about half the pixels change class and a mask of zeros would be caught
    state = torch.load(seg_run / "checkpoints" / "best.pt", weights_only=True)
    run = load_run(seg_run)
    with torch.no_grad():
        logits = run.model({"image": x})["segmentation"]
        state["model"]["heads.segmentation.out.bias"][2] += (logits[:, 0] - logits[:, 2]).median()
        run.model.load_state_dict(state["model"])
        want = run.model({"image": x})["segmentation"].argmax(1)
    torch.save(state, tmp_path / "half.pt")
    pr.main(
        [
            str(seg_run),
            f"input={tmp_path / 'imgs' / 'img*.png'}",
            f"output={tmp_path / 'out' / 'preds.csv'}",
            f"checkpoint={tmp_path / 'half.pt'}",
        ]
    )
    capsys.readouterr()
    rows = _read_csv(tmp_path / "out" / "preds.csv")
    assert len(rows) == 3
    for i, r in enumerate(rows):
        path = Path(r["segmentation.mask"])
        assert path == tmp_path / "out" / "preds_masks" / f"img{i}_segmentation.png"
        got = torch.from_numpy(np.array(Image.open(path))).long()
        assert got.shape == (16, 16) and torch.equal(got, want[i])
    assert set(want.unique().tolist()) >= {0, 2}  # both classes occur in the masks
    with torch.no_grad():
        depth = run.model({"image": x})["depth"][:, 0]
    for i, r in enumerate(rows):  # 16-bit maps: value x 65535
        path = Path(r["depth.map"])
        assert path == tmp_path / "out" / "preds_masks" / f"img{i}_depth.png"
        got = torch.from_numpy(np.array(Image.open(path)).astype(np.int64)).float() / 65535
        assert torch.allclose(got, depth[i].clamp(0, 1), atol=1 / 65535)
    assert float(depth.std()) > 1e-3  # not a flat map: a writer of constants would fail above


def test_predict_from_a_csv_of_features(tmp_path_factory, tmp_path, capsys):
    folder = tmp_path_factory.mktemp("tab")
    rnd = random.Random(0)
    rows = ["x1,x2,x3,price,kind"]
    for _ in range(200):
        x1, x2, x3 = (rnd.uniform(-1, 1) for _ in range(3))
        rows.append(f"{x1:.4f},{x2:.4f},{100 + 50 * x3:.4f},{2 * x1 - x2:.4f},{'yes' if x3 > 0 else 'no'}")
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    run = _train(
        tmp_path_factory,
        "tabrun",
        [
            "experiment=tabular",
            f"data.path={folder / 'd.csv'}",
            "data.targets={price: price, kind: kind}",
            "+tasks.price.kind=regression",
            "+tasks.kind.kind=classification",
            "trainer.max_epochs=2",
            "trainer.batch_size=32",
            "trainer.progress=false",
            "device=cpu",
            "logger.console_summary=false",
        ],
    )
    loaded = load_run(run)
    test = loaded.plan.source.load()["test"]  # standardised as in training
    raw = [r.split(",") for r in rows[1:]]
    # the test rows, columns reordered and an id column added: features are found by name
    test_rows = split_indices(200, 0.1, 0.1, 0)["test"].sort().values.tolist()
    lines = ["id,x3,x1,x2"] + [f"r{i},{raw[i][2]},{raw[i][0]},{raw[i][1]}" for i in test_rows]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    pr.main([str(run), f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'p.csv'}"])
    capsys.readouterr()
    got = _read_csv(tmp_path / "p.csv")
    with torch.no_grad():
        want = loaded.model({"features": test.inputs["features"]})
    assert len(got) == len(test_rows) == 20
    scale = json.loads((run / "data.json").read_text())["target_scaling"]["price"]
    probs = torch.softmax(want["kind"], 1)
    for i, r in enumerate(got):
        assert r["input"] == f"{tmp_path / 'new.csv'}:row {i + 1}"
        value = float(want["price"].reshape(-1)[i]) * scale["std"] + scale["mean"]  # back in the price's units
        assert float(r["price.value"]) == pytest.approx(value, abs=1e-4)
        assert r["kind.label"] == ["no", "yes"][int(probs[i].argmax())]
        assert float(r["kind.probs.yes"]) == pytest.approx(float(probs[i, 1]), abs=1e-5)
    # a table without a feature column names it
    (tmp_path / "bad.csv").write_text("x1,x2\n0.1,0.2\n")
    code, err = _exit(pr.main, [run, f"input={tmp_path / 'bad.csv'}", f"output={tmp_path / 'q.csv'}"], capsys)
    assert code == 2 and "'x3'" in err and "not in the header" in err


def test_regression_values_are_mapped_back_when_the_source_scaled_the_target(shapes_run, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for f in ("config.yaml", "checkpoints/best.pt"):
        (run / f).write_bytes((shapes_run / f).read_bytes())
    data = json.loads((shapes_run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps(data | {"target_scaling": {"size": {"mean": 10.0, "std": 2.0}}}))
    _write_pngs(_test_images(shapes_run, 2), tmp_path / "imgs")
    for r, out in ((shapes_run, "a.csv"), (run, "b.csv")):
        pr.main([str(r), f"input={tmp_path / 'imgs'}", f"output={tmp_path / out}"])
    capsys.readouterr()
    a, b = _read_csv(tmp_path / "a.csv"), _read_csv(tmp_path / "b.csv")
    for x, y in zip(a, b):
        assert float(y["size.value"]) == pytest.approx(10.0 + 2.0 * float(x["size.value"]), abs=1e-5)
        assert x["shape.label"] == y["shape.label"]


def test_csv_columns_spread_nested_records(tmp_path):
    """Nested dicts and lists become dotted columns (lists by index) in first-seen order; an empty
    dict or list makes no column; JSONL keeps the records as they are."""
    a = {"input": "a", "t": {"probs": {"x": 0.25, "y": 0.75}, "value": [1.0, 2.0], "none": [], "empty": {}}}
    b = {"input": "b", "u": {"map": ["p0.png"]}, "t": {"probs": {"x": 0.5, "y": 0.5}, "value": [3.0, 4.0]}}
    assert pr.columns(a) == {"input": "a", "t.probs.x": 0.25, "t.probs.y": 0.75, "t.value.0": 1.0, "t.value.1": 2.0}
    pr.write_records([a, b], tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines() == [
        "input,t.probs.x,t.probs.y,t.value.0,t.value.1,u.map.0",
        "a,0.25,0.75,1.0,2.0,",
        "b,0.5,0.5,3.0,4.0,p0.png",
    ]
    pr.write_records([a, b], tmp_path / "p.jsonl")
    assert [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()] == [a, b]


def test_image_size_policy(shapes_run, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(big)
    code, err = _exit(pr.main, [shapes_run, f"input={big}", f"output={tmp_path / 'p.csv'}"], capsys)
    assert code == 2 and str(big) in err and "image is 40x30 pixels, the run's images are 16x16" in err
    assert "resize=true" in err and not (tmp_path / "p.csv").exists()
    pr.main([str(shapes_run), f"input={big}", f"output={tmp_path / 'p.csv'}", "resize=true"])
    capsys.readouterr()
    (row,) = _read_csv(tmp_path / "p.csv")
    src = ShapesSource(image_size=16)
    x = src.prepare_inputs([big], {}, resize=True).inputs["image"]
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x[0, :, 8, 8], torch.tensor([200, 30, 30]) / 255, atol=1e-6)  # a flat image stays flat
    with torch.no_grad():
        size = load_run(shapes_run).model({"image": x})["size"].reshape(-1)
    assert float(row["size.value"]) == pytest.approx(float(size[0]), abs=1e-5)


def test_grayscale_shapes_take_the_generators_luminance(tmp_path):
    img = torch.rand(3, 16, 16)
    path = tmp_path / "c.png"
    Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    x = ShapesSource(image_size=16, grayscale=True).prepare_inputs([path], {}).inputs["image"]
    q = (img * 255).round() / 255
    want = (q * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    assert x.shape == (1, 1, 16, 16) and torch.allclose(x[0], want, atol=1e-6)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["{run}", "input={tmp}/missing.png"], ["no such file or folder", "missing.png"]),
        (["{run}"], ["input: missing"]),
        (["{run}", "input={tmp}", "output={tmp}/p.txt"], ["output: unknown output format", ".csv, .jsonl"]),
        (["{run}", "input={tmp}", "resize=maybe"], ["resize: unknown resize policy"]),
        (["{run}", "input={tmp}/notes.txt"], ["is not a file this run's data source reads", "image files"]),
        (["{run}", "input={tmp}/empty"], ["holds no"]),
        (["{run}", "input={tmp}/broken.png"], ["cannot decode image", "broken.png"]),
        (["{run}", "input={tmp}/list.csv"], ["row 1", "no such file", "nothere.png"]),
        (["{run}", "input={tmp}/a.png", "dataset=audio"], ["dataset: no task of the run reads this dataset"]),
        (["{run}", "{tmp}/a.png"], ["a second argument without key=", "inputs as input="]),
        (
            ["{run}", "input={tmp}/a.png", "ouput=p.csv"],
            ["unknown argument of mtl-predict", "did you mean output=...?"],
        ),
    ],
)
def test_predict_errors_name_the_argument(shapes_run, tmp_path, capsys, argv, words):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "list.csv").write_text("image\nnothere.png\n")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    argv = [a.format(tmp=tmp_path, run=shapes_run) for a in argv]
    code, err = _exit(pr.main, argv, capsys)
    assert code == 2 and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_a_source_without_prepare_inputs_is_named(tmp_path):
    from mtl_cli.data.sources.tones import TonesSource

    with pytest.raises(DataError) as e:
        TonesSource().prediction_files([tmp_path])
    text = e.value.render()
    assert "the tones data source cannot prepare inputs for prediction" in text
    for able in ("shapes", "csv", "image_manifest", "multi_mnist", "torchvision"):
        assert able in text.split("allowed:", 1)[1]


def test_predict_on_a_source_without_prepare_inputs_exits_2(shapes_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ShapesSource, "predict_suffixes", ())  # as a source that never implemented the hook
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    code, err = _exit(pr.main, [shapes_run, f"input={tmp_path / 'a.png'}"], capsys)
    assert code == 2 and "the shapes data source cannot prepare inputs for prediction" in err
    assert "Traceback" not in err


def test_image_manifest_run_predicts_from_its_manifest_as_in_training(tmp_path_factory, tmp_path, capsys):
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "img").mkdir()
    g = torch.Generator().manual_seed(0)
    rows = ["file,tone,level"]
    for i in range(40):
        x = (torch.rand(3, 20, 24, generator=g) * (0.3 + 0.7 * (i % 2))).mul(255).round().byte()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(folder / "img" / f"p{i}.png")  # 24 x 20: resized
        rows.append(f"img/p{i}.png,{'bright' if i % 2 else 'dark'},{float(x.float().mean()) / 255:.4f}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    plain = [o for o in BASE if not o.startswith(("data.", "tasks."))]
    run = _train(
        tmp_path_factory,
        "manrun",
        plain
        + [
            "data=image_manifest",
            f"data.path={folder / 'manifest.csv'}",
            "data.image_column=file",
            "data.image_size=16",
            "tasks=none",
            "+tasks.tone.kind=classification",
            "+tasks.level.kind=regression",
            "trainer.max_epochs=1",
        ],
    )
    pr.main([str(run), f"input={folder / 'manifest.csv'}", f"output={tmp_path / 'p.jsonl'}"])  # the manifest as a list
    capsys.readouterr()
    got = [json.loads(ln) for ln in (tmp_path / "p.jsonl").read_text().splitlines()]
    loaded = load_run(run)
    images = loaded.plan.source._decode_all().inputs["image"]  # every row, decoded as training decodes it
    with torch.no_grad():
        want = loaded.model({"image": images})
    assert [Path(r["input"]).name for r in got] == [f"p{i}.png" for i in range(40)]
    classes = ["bright", "dark"]  # the label map: sorted names
    # level was learnt z-scored (data.json's target_scaling): predictions are in its own units
    scale = json.loads((run / "data.json").read_text())["target_scaling"]["level"]
    assert 0.1 < scale["mean"] < 0.6 and 0.05 < scale["std"] < 0.4
    for i, r in enumerate(got):
        value = float(want["level"].reshape(-1)[i]) * scale["std"] + scale["mean"]
        assert r["level"]["value"] == pytest.approx(value, abs=1e-5)
        p = torch.softmax(want["tone"][i], 0)
        assert r["tone"]["label"] == classes[int(p.argmax())]
        assert r["tone"]["probs"]["dark"] == pytest.approx(float(p[1]), abs=1e-5)


def test_torchvision_and_multi_mnist_inputs_are_prepared_as_their_training_images(tmp_path):
    from mtl_cli.data.sources.multi_mnist import MultiMnistSource, overlay
    from mtl_cli.data.sources.torchvision_sets import TorchvisionSource, to_float_images

    g = torch.Generator().manual_seed(0)
    digit = torch.randint(0, 256, (28, 28), generator=g, dtype=torch.uint8)
    Image.fromarray(digit.numpy()).save(tmp_path / "digit.png")
    mnist = TorchvisionSource(dataset="MNIST", image_size=20)
    x = mnist.prepare_inputs([tmp_path / "digit.png"], {}).inputs["image"]
    assert torch.equal(x, to_float_images(digit[None, None], 20))  # what training does to the raw digits
    face = torch.randint(0, 256, (218, 178, 3), generator=g, dtype=torch.uint8)  # CelebA: 178 x 218, aligned
    Image.fromarray(face.numpy()).save(tmp_path / "face.png")
    celeba = TorchvisionSource(dataset="CelebA", image_size=32)
    x = celeba.prepare_inputs([tmp_path / "face.png"], {}).inputs["image"]
    want = to_float_images(face.permute(2, 0, 1)[None, :, 20:198, :], 32)  # the centre 178 x 178
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x, want, atol=1e-6)
    with pytest.raises(DataError, match="resize=false"):
        celeba.prepare_inputs([tmp_path / "face.png"], {}, resize=False)

    items = torch.randint(0, 256, (2, 28, 28), generator=g, dtype=torch.uint8)
    canvas = overlay(items[:1], items[1:])[0]  # 36 x 36
    Image.fromarray(canvas.numpy()).save(tmp_path / "canvas.png")
    mm = MultiMnistSource(image_size=28)
    x = mm.prepare_inputs([tmp_path / "canvas.png"], {}).inputs["image"]
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    want = F.resize(canvas[None, None], [28, 28], interpolation=InterpolationMode.NEAREST).float() / 255
    assert torch.equal(x, want)
    Image.fromarray(items[0].numpy()).resize((30, 30)).save(tmp_path / "odd.png")
    with pytest.raises(DataError, match="image is 30x30 pixels"):
        mm.prepare_inputs([tmp_path / "odd.png"], {})
