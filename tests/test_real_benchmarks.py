"""The benchmarks on real data stay runnable end to end: ``benchmarks/school.py --smoke`` (split 1,
equal weighting, 1 epoch) and ``benchmarks/mulan.py --smoke`` (enb, fold 1, single-target and
equal weighting, 2 epochs) finish and their JSON holds finite, plausible explained variance and
aRRMSE, computed from the runs' own files. Skipped when ../shared/data lacks the data (slow:
about a minute each on a busy 2-core machine)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _smoke(script: str, data: Path, needed: str, out: Path) -> dict:
    """``benchmarks/<script> --smoke`` on ``data`` (skipped when it lacks ``needed``): its JSON."""
    if not (data / needed).is_file():
        pytest.skip(f"no {needed} in {data}")
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--data", str(data), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / script.replace(".py", ".json")).read_text())


@pytest.mark.slow
def test_school_smoke_gives_a_finite_explained_variance(tmp_path):
    res = _smoke("school.py", SHARED / "school", "school_b.mat", tmp_path)
    (run,) = res["runs"]["ew"]
    assert run["split"] == 1 and run["tasks"] == 139
    assert run["test_pupils"] == 3890  # split 1's test part (school_1_indexes.mat: tst)
    # one epoch of a small MLP: better than predicting the test mean, far from perfect
    assert math.isfinite(run["ev"]) and -0.5 < run["ev"] < 0.6, run
    assert math.isfinite(run["ev_w"]) and run["ev_w"] < 0.6, run
    assert "EV %" in (tmp_path / "school.txt").read_text()


@pytest.mark.slow
def test_mulan_smoke_gives_finite_arrmse_for_stl_and_multi_task(tmp_path):
    res = _smoke("mulan.py", SHARED / "mulan_mtr", "enb.arff", tmp_path)
    enb = res["results"]["enb"]
    for method in ("stl", "ew"):
        (r,) = enb[method]
        assert r["fold"] == 1 and r["test_rows"] in (76, 77)  # a tenth of enb's 768 rows
        assert sorted(r["rrmse"]) == ["Y1", "Y2"]
        # RRMSE 1 is the training mean's error: 2 epochs get below it, and never to 0
        assert all(0.0 < v < 1.5 for v in r["rrmse"].values()), r
        assert 0.0 < r["arrmse"] < 1.5
    assert math.isfinite(enb["ew"][0]["delta_m"])
    assert (tmp_path / "enb" / "report" / "report.md").is_file()


@pytest.mark.slow
def test_small_images_smoke_writes_the_data_and_the_linear_reference(tmp_path):
    """benchmarks/small_images.py --smoke: the digit scans become 1,797 PNGs in a manifest with a
    fixed 80/10/10 split, the linear reference is near the known logistic-regression accuracy, and
    one-epoch runs of the defaults and the preset finish."""
    pytest.importorskip("sklearn")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "small_images.py"), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "small_images.json").read_text())
    rows = (tmp_path / "data" / "manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 1797 and rows[0] == "image,digit,odd,big,ink,split"
    assert [sum(r.endswith("," + s) for r in rows) for s in ("train", "val", "test")] == [1437, 180, 180]
    assert 0.95 < res["linear"]["digit/accuracy"] < 0.99  # logistic regression on the pixels
    assert res["linear"]["ink/r2"] > 0.999  # ink is linear in the pixels
    for row in ("defaults", "experiment=small_images"):
        (run,) = res["runs"][row]
        assert 0.0 <= run["digit/accuracy"] <= 1.0
    # the preset's own run directory says what it trained with
    cfg = (tmp_path / "experiment_small_images" / "seed0" / "config.yaml").read_text()
    assert "batch_size: 32" in cfg and "CosineAnnealingLR" in cfg


@pytest.mark.slow
def test_multi_fashion_protocol_script_end_to_end_on_fake_items(tmp_path):
    """benchmarks/multi_fashion_protocol.py on 40 + 20 fake Fashion-MNIST items, 1 seed, ew only,
    with the time-budget calibration: every cell's parameters are the protocol's models (LeNet
    30,890 + 510 per head; the half-size encoder 15,323 + 360 per head) and its Δm columns are
    mtl_cli's Δm of the runs' own test metrics against each single-task pair."""
    from test_data_torchvision import write_idx

    from mtl_cli.results.delta_m import delta_m

    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(
            raw / f"{prefix}-images-idx3-ubyte",
            torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8),
            2051,
        )
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", (torch.arange(n) % 10).to(torch.uint8), 2049)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "multi_fashion_protocol.py"), "--root", str(tmp_path / "root")]
    cmd += ["--out", str(out), "--seeds", "0", "--methods", "ew", "--epochs", "3", "--time-budget-s", "1000"]
    cmd += ["--calibrate-steps", "2", "--jobs", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads((out / "multi_fashion_protocol.json").read_text())
    # 36 training canvases (two per item of the 36 kept for training) in batches of 256: 1 step
    assert res["calibration"]["steps_per_epoch"] == 1 and res["epochs"] == 3  # the budget fits all 3
    assert res["step_size"] == 1  # 15 of 100 epochs, scaled to 3 and rounded, at least 1
    cells = res["cells"]
    assert {n: cells[n]["seeds"]["0"]["parameters"] for n in cells} == {
        "stl": 2 * (30_890 + 510),
        "stl_half": 2 * (15_323 + 360),
        "ew": 30_890 + 2 * 510,
    }
    assert all(cells[n]["seeds"]["0"]["epochs"] == 3 for n in cells)
    directions = {t: {"accuracy": "higher", "f1": "higher"} for t in ("left", "right")}
    ew = cells["ew"]["seeds"]["0"]
    for ref in ("stl", "stl_half"):
        expected = delta_m(ew["test"], cells[ref]["seeds"]["0"]["test"], directions)["delta_m"]
        assert ew[f"delta_m_vs_{ref}"] == pytest.approx(expected)
        assert math.isfinite(expected)
    for t in ("left", "right"):  # the stl cell's test metrics are its single-task runs' own
        own = json.loads((out / "stl" / "seed0" / t / "summary.json").read_text())["test"][t]
        assert cells["stl"]["seeds"]["0"]["test"][t] == own
    row = next(r for r in res["table"].splitlines() if r.startswith("| ew |"))
    assert f"{ew['test']['left']['accuracy'] * 100:.2f}" in row and f"{ew['delta_m_vs_stl']:.2f}" in row
    assert (out / "report.md").is_file()


def test_mulan_trees_rrmse_is_one_for_the_training_mean_and_zero_when_exact():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mulan_trees import rrmse

    y = np.array([1.0, 2.0, 4.0, 7.0])
    assert rrmse(y, np.full(4, 3.0), 3.0) == pytest.approx(1.0)  # predicting the training mean
    assert rrmse(y, y, 3.0) == 0.0
    # sqrt(SSE / sum (y - mean_train)^2): SSE 4 (each off by 1), denominator 4 + 1 + 1 + 16 = 22
    assert rrmse(y, y + 1.0, 3.0) == pytest.approx(math.sqrt(4 / 22))
    assert math.isnan(rrmse(np.array([2.0, 2.0]), np.array([1.0, 3.0]), 2.0))


@pytest.mark.slow
def test_mulan_trees_rebuild_the_recorded_fold_and_fit_enb(tmp_path):
    """The tree reference's fold 1 of enb is mulan.py's fold 1 (same test-row count, every row
    once), and 20 bagged trees fit enb's two heating/cooling loads far below RRMSE 1 (targets or
    rows out of line with the features would give about 1)."""
    if not (SHARED / "mulan_mtr" / "enb.arff").is_file():
        pytest.skip("no enb.arff in ../shared/data/mulan_mtr")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mulan_trees import fold_arrays, tree_fold

    xtr, ytr, mtr, xte, yte, mte, names = fold_arrays(SHARED / "mulan_mtr", "enb", 10, 1)
    assert names == ["Y1", "Y2"] and len(xtr) + len(xte) == 768 and mtr.all() and mte.all()
    recorded = json.loads((ROOT / "benchmarks" / "results" / "mulan" / "mulan.json").read_text())["results"]
    assert len(yte) == next(r["test_rows"] for r in recorded["enb"]["stl"] if r["fold"] == 1)
    r = tree_fold(SHARED / "mulan_mtr", "enb", 10, 1, n_estimators=20, jobs=1)
    assert 0.0 < r["arrmse"] < 0.3 and r["arrmse"] == pytest.approx(sum(r["rrmse"].values()) / 2)
