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

import pytest

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
