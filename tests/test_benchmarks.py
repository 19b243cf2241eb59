"""The benchmark scripts stay alive: ``benchmarks/gpu_step.py --smoke`` runs on a CPU (tiny sizes,
every configuration) and its JSON holds every configuration with finite positive times and ratios,
and the project's step and the hand-written loop computed the same weights (slow: ~1-2 min)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_gpu_step_smoke_measures_every_configuration_and_the_same_weights(tmp_path):
    import gpu_step

    out = tmp_path / "gpu_step.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--smoke", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["command"].startswith(".venv/bin/python benchmarks/gpu_step.py --smoke")
    assert res["machine"]["torch"] and res["settings"]["smoke"] is True

    # project vs hand: eager and compiled at 2, 8 and 40 tasks
    pairs = res["project_vs_hand"]
    assert sorted((r["compiled"], r["tasks"]) for r in pairs) == [(c, n) for c in (False, True) for n in (2, 8, 40)]
    for r in pairs:
        for k in ("project_step_s", "hand_step_s", "project_img_s", "hand_img_s", "ratio"):
            assert _positive(r[k]), (r["config"], r["tasks"], k, r[k])
        assert all(_positive(v) for v in r["ratio_ci95"])
        assert r["ratio"] == pytest.approx(r["project_step_s"] / r["hand_step_s"])
        eq = r["equivalence"]
        # both sides took the same steps from the same weights, and ended with the same weights
        assert eq["same_initial_weights"] and eq["steps"]["project"] == eq["steps"]["hand"] >= 3
        assert eq["moved_norm"] > 0 and eq["rel"] <= gpu_step.EQUIV_TOL and eq["ok"], eq
        assert r["peak_mb"] is None  # CPU: no peak memory figure

    # every weighting method (and mode) at 8 tasks, against ew and the floor
    m = res["methods"]
    assert m["tasks"] == 8
    want = [label for label, _, _ in gpu_step.method_configs(gpu_step.DEFAULT_METHODS.split(","), ["loop", "batched"])]
    got = [r["method"] for r in m["rows"]]
    assert got == want + ["floor (hand: one backward per task)"]
    assert {"upgrad mode=batched", "mgda_ub mode=loop", "upgrad source=rep mode=loop", "uw"} <= set(got)
    kinds = {r["method"]: r["kind"] for r in m["rows"]}
    assert kinds["ew"] == "equal weighting" and kinds["mgda_ub mode=loop"] == "representation"
    assert kinds["pcgrad mode=loop"].startswith("parameter")
    for r in m["rows"]:
        for k in ("step_s", "img_s", "vs_ew", "vs_floor"):
            assert _positive(r[k]), (r["method"], k, r[k])
        assert r["finite_weights"], r["method"]
        if r["kind"] in ("representation", "parameter gradients (exact)"):
            assert _positive(r["G_mb_fp32"]) and isinstance(r["target_met"], bool)
    ew = next(r for r in m["rows"] if r["method"] == "ew")
    assert ew["vs_ew"] == 1.0
    # the floor took as many steps as ew, from the same weights (its update is ew's up to bf16 rounding)
    feq = m["floor_vs_ew_equivalence"]
    assert feq["steps"]["project"] == feq["steps"]["hand"] >= 3 and math.isfinite(feq["rel"]), feq

    txt = out.with_suffix(".txt").read_text()
    assert "| config | tasks | project ms/step |" in txt and "| method | kind |" in txt
