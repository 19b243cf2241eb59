"""mtl-export: safetensors weights (with the config beside them), ONNX and torch.export programs.

Each exported file is read back outside this package (a subprocess in which ``import mtl_cli``
fails) and its outputs are compared with the eager model's: every task kind of the shapes data
(classification, binary, multilabel, regression, segmentation, dense regression) and a model with
two inputs, at batch sizes 1 and 4 (and different batch sizes per input). Tolerance (float32):
``|exported - eager| <= 1e-4 + 1e-4 * |eager|``. mtl-predict reads the export folder and predicts
what it predicts from the run's checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl_cli.cli.export as export_cli
import mtl_cli.cli.predict as predict_cli
from mtl_cli.config.compose import compose
from mtl_cli.runs import load_run
from mtl_cli.train.api import train

pytest.importorskip("safetensors", reason='pip install "mtl-cli[export]"')
pytest.importorskip("onnx", reason='pip install "mtl-cli[export]"')
pytest.importorskip("onnxscript", reason='pip install "mtl-cli[export]"')
pytest.importorskip("onnxruntime", reason='pip install "mtl-cli[export]"')

# slow (about 35 s: two runs trained, exported and run in ONNX Runtime): the export extra's
# round trips run in CI's slow stage, out of the default suite's time
pytestmark = pytest.mark.slow

ATOL = RTOL = 1e-4
SMALL = [
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "trainer.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "device=cpu",
    "logger.console_summary=false",
]
KINDS = {"classification", "binary", "multilabel", "regression", "segmentation", "dense_regression"}
BLOCKED = "import sys; sys.modules['mtl_cli'] = None  # nothing of this package can be imported\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs: every target of the shapes data as a task (8 tasks of the 6 kinds), and
    two image datasets of other sizes and channels, each with its own stem (experiment=two_inputs)."""
    root = tmp_path_factory.mktemp("runs")
    train(compose(["experiment=shapes_all", *SMALL]), root / "all")
    outlines = [f"datasets.outlines.{k}" for k in ("train_size=64", "val_size=32", "test_size=32", "image_size=12")]
    train(compose(["experiment=two_inputs", *SMALL, *outlines]), root / "two")
    return {"all": root / "all", "two": root / "two"}


@pytest.fixture(scope="module")
def exported(runs) -> dict[str, Path]:
    return {name: export_cli.export_run(d) for name, d in runs.items()}


def outside(script: str, cwd: Path) -> str:
    """Run ``script`` in a fresh Python in which mtl_cli cannot be imported; its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED + textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_safetensors_holds_every_weight_and_loads_without_the_package(runs, exported, tmp_path):
    for name, out in exported.items():
        got = outside(
            """
            import json, yaml, torch
            from safetensors.torch import load_file
            w = load_file("model.safetensors")
            torch.save(w, "plain.pt")  # (to compare in the test; a plain dict of tensors)
            cfg = yaml.safe_load(open("config.yaml"))
            info = json.load(open("export.json"))
            outputs = [o["name"] for o in info["outputs"]]
            print(json.dumps({"n": len(w), "arch": cfg["arch"]["name"], "outputs": outputs}))
            """,
            out,
        )
        seen = json.loads(got)
        ckpt = torch.load(runs[name] / "checkpoints" / "best.pt", weights_only=True)["model"]
        plain = torch.load(out / "plain.pt", weights_only=True)
        assert plain.keys() == ckpt.keys() and seen["n"] == len(ckpt)
        for k, v in ckpt.items():
            assert plain[k].dtype == v.dtype and torch.equal(plain[k], v), k
        assert seen["arch"] == ("multi_input" if name == "two" else "hps")
        assert seen["outputs"] == [t.name for t in load_run(runs[name], overrides=["device=cpu"]).tasks]
        assert (out / "config.yaml").read_bytes() == (runs[name] / "config.yaml").read_bytes()


def _inputs(info: dict, batches: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {
        i["name"]: g.standard_normal((b, *i["shape"][1:])).astype(np.float32) for i, b in zip(info["inputs"], batches)
    }


@pytest.mark.parametrize("name", ["all", "two"])
def test_onnx_and_torch_export_give_the_eager_outputs_for_every_task(runs, exported, name):
    out = exported[name]
    info = json.loads((out / "export.json").read_text())
    run = load_run(runs[name], overrides=["device=cpu"])
    assert [o["name"] for o in info["outputs"]] == [t.name for t in run.tasks]
    if name == "all":
        assert {o["kind"] for o in info["outputs"]} == KINDS
    else:
        assert [i["key"] for i in info["inputs"]] == ["image", "outlines/image"]
    cases = [[1] * len(info["inputs"]), [4] * len(info["inputs"])]
    if name == "two":
        cases.append([2, 5])  # each input its own batch size
    for case, batches in enumerate(cases):
        feed = _inputs(info, batches, case)
        np.savez(out / "feed.npz", **feed)
        outside(
            """
            import json, numpy as np, onnxruntime as ort, torch
            info = json.load(open("export.json"))
            feed = dict(np.load("feed.npz"))
            names = [o["name"] for o in info["outputs"]]
            sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
            assert [i.name for i in sess.get_inputs()] == [i["name"] for i in info["inputs"]]
            assert [o.name for o in sess.get_outputs()] == names
            onnx_out = sess.run(names, feed)
            program = torch.export.load("model.pt2").module()
            with torch.no_grad():
                pt2_out = program(*[torch.from_numpy(feed[i["name"]]) for i in info["inputs"]])
            np.savez("onnx_out.npz", **dict(zip(names, onnx_out)))
            np.savez("pt2_out.npz", **{n: y.numpy() for n, y in zip(names, pt2_out)})
            """,
            out,
        )
        inputs = {i["key"]: torch.from_numpy(feed[i["name"]]) for i in info["inputs"]}
        with torch.no_grad():
            eager = run.model(inputs)
        for fmt in ("onnx", "pt2"):
            got = np.load(out / f"{fmt}_out.npz")
            for t in run.tasks:
                want = eager[t.name].numpy()
                assert got[t.name].shape == want.shape, (fmt, t.name, batches)
                np.testing.assert_allclose(got[t.name], want, atol=ATOL, rtol=RTOL, err_msg=f"{fmt} {t.name} {batches}")
    v = info["verification"]
    assert v["onnx"]["within_tolerance"] and v["torch_export"]["within_tolerance"]


def test_mtl_predict_reads_the_safetensors_export(runs, exported, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
    results = {}
    for where, d in (("run", runs["all"]), ("export", exported["all"])):
        dest = tmp_path / f"{where}.jsonl"
        predict_cli.main([str(d), f"input={tmp_path}", f"output={dest}", "device=cpu"])
        results[where] = [json.loads(x) for x in dest.read_text().splitlines()]
    assert "Checkpoint best" in capsys.readouterr().out

    def same(rec):  # mask files are written beside each output
        return json.loads(json.dumps(rec).replace("export_masks", "X").replace("run_masks", "X"))

    assert [same(r) for r in results["export"]] == [same(r) for r in results["run"]]
    assert len(results["run"]) == 3 and set(results["run"][0]) > {"shape", "segmentation", "depth"}


def test_a_safetensors_file_may_be_named_as_the_checkpoint(runs, exported):
    a = load_run(runs["all"], overrides=["device=cpu"])
    b = load_run(runs["all"], str(exported["all"] / "model.safetensors"), ["device=cpu"])
    assert b.checkpoint.suffix == ".safetensors" and b.checkpoint_name == "best" and b.step == a.step
    x = {"image": torch.randn(2, 3, 16, 16)}
    with torch.no_grad():
        ya, yb = a.model(x), b.model(x)
    assert all(torch.equal(ya[k], yb[k]) for k in ya)


def test_the_cli_writes_the_formats_asked_for(runs, tmp_path, capsys):
    export_cli.main([str(runs["two"]), "formats=safetensors,onnx", f"output={tmp_path / 'out'}"])
    shown = capsys.readouterr().out
    assert "model.onnx  (checked: largest difference" in shown
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == [
        "config.yaml",
        "data.json",
        "export.json",
        "model.onnx",
        "model.safetensors",
    ]


def test_bad_arguments_and_missing_packages_exit_2_naming_the_extra(runs, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        export_cli.main([str(runs["two"]), "formats=onnx,tflite"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "formats: unknown export format" in err and "allowed: safetensors, onnx" in err
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(SystemExit) as e:
        export_cli.main([str(runs["two"]), "formats=onnx"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "ONNX export needs onnxscript, which is not installed" in err
    assert 'pip install "mtl-cli[export]"' in err


def test_an_export_that_differs_from_the_model_is_an_error(runs, tmp_path, monkeypatch, capsys):
    orig = export_cli.eager_outputs
    monkeypatch.setattr(export_cli, "eager_outputs", lambda run, xs: [y + 1e-2 for y in orig(run, xs)])
    with pytest.raises(SystemExit) as e:
        export_cli.main([str(runs["two"]), "formats=torch_export", f"output={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "model.pt2: gives other outputs than the model in PyTorch" in err
