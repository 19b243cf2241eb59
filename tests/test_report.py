"""mtl-report: the leaderboard's numbers are the mean and std over seeds of the runs' summary.json
values (checked with the arithmetic written out), CSV and Markdown agree with them, the Pareto
front is right on hand-made points, plots are PNG files, failed runs are listed with their error,
and --group-by groups by config values.

The fast tests read run directories written here by hand (a sweep of numbered jobs, a failed and
a running job, a baseline=stl run); one fast test reads a real run; the *slow* test runs a real
4-job multirun in a subprocess and reports on it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_resume import BASE

import mtl_cli.report.plots as plots_mod
from mtl_cli.cli.report import main
from mtl_cli.report import Stat, discover, fmt_stat, mean_curve, mean_std, pareto_front

PNG = b"\x89PNG\r\n\x1a\n"
TASKS = {
    "shape": {
        "kind": "classification",
        "role": "primary",
        "weight": 1.0,
        "primary_metric": "accuracy",
        "directions": {"accuracy": "higher", "f1": "higher"},
    },
    "size": {
        "kind": "regression",
        "role": "primary",
        "weight": 1.0,
        "primary_metric": "mae",
        "directions": {"mae": "lower", "r2": "higher"},
    },
}


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(var, raising=False)


def write_run(
    d: Path,
    *,
    seed: int,
    weighting: str,
    test: dict,
    delta_m=None,
    tps=0.1,
    train_time=10.0,
    epochs=2,
    peak=100.0,
    objective=0.5,
    lr=1e-3,
    extra: list[str] = (),
    tasks=TASKS,
    weights=(1.0, 1.0),
) -> None:
    """A finished run directory as mtl-train writes it (the files mtl-report reads)."""
    d.mkdir(parents=True)
    summary = {
        "run_dir": str(d),
        "objective": {"monitor": "mean_rel", "value": objective, "direction": "maximize"},
        "epochs": epochs,
        "steps": 4 * epochs,
        "tasks": tasks,
        "test": {t: {**m, "loss": 9.0} for t, m in test.items()},
        "time_per_step_s": tps,
        "train_time_s": train_time,
        "peak_memory_mb": peak,
        "peak_memory_kind": "process_max_rss",
    }
    if delta_m is not False:  # False: no delta_m key at all (a run without baseline_dir)
        summary["delta_m"] = {"test": delta_m, "val": delta_m, "per_task": {}, "baseline_dir": "/b"}
    (d / "summary.json").write_text(json.dumps(summary))
    overrides = [
        f"seed={seed}",
        f"weighting={weighting}",
        "trainer.max_epochs=2",
        f"run_dir={d}",
        "hydra.job.chdir=false",
        *extra,
    ]
    (d / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {
        "seed": seed,
        "weighting": {"name": weighting},
        "optimizer": {"lr": lr},
        "run_dir": str(d),
        "trainer": {"max_epochs": epochs},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    recs = []
    for step in range(1, 4 * epochs + 1):
        recs.append(
            {
                "split": "train",
                "epoch": (step - 1) // 4 + 1,
                "step": step,
                **{f"loss/{t}": 1.0 / step + seed for t in tasks},
                **{f"weight/{t}": w * step for t, w in zip(tasks, weights)},
            }
        )
        if step % 4 == 0:
            recs.append(
                {
                    "split": "val",
                    "epoch": step // 4,
                    "step": step,
                    **{f"{t}/{i['primary_metric']}": 0.1 * step for t, i in tasks.items()},
                }
            )
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"split": "tra')  # a cut line


def write_stl(d: Path, *, seed: int, test: dict, tps: dict, train_time: dict, peak: dict) -> None:
    """A baseline=stl run: baselines.json and one single-task run per task in <d>/<task>/."""
    d.mkdir(parents=True)
    (d / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", "baseline=stl", "trainer.max_epochs=2"]))
    (d / "config.yaml").write_text(
        yaml.safe_dump({"seed": seed, "baseline": "stl", "weighting": {"name": "ew"}, "optimizer": {"lr": 1e-3}})
    )
    for t in TASKS:
        write_run(
            d / t,
            seed=seed,
            weighting="ew",
            test={t: test[t]},
            delta_m=False,
            tps=tps[t],
            train_time=train_time[t],
            peak=peak[t],
            tasks={t: TASKS[t]},
        )
    (d / "baselines.json").write_text(
        json.dumps(
            {
                "tasks": {
                    t: {
                        "test": test[t],
                        "val": test[t],
                        "directions": TASKS[t]["directions"],
                        "primary_metric": TASKS[t]["primary_metric"],
                        "run_dir": str(d / t),
                    }
                    for t in TASKS
                },
                "config": {"seed": seed},
            }
        )
    )


NAN = float("nan")
# weighting=ew: seeds 0, 1, 2 (size/mae of seed 2 is NaN, written as null); uw: seeds 0, 1 (no Δm for
# seed 1); dwa: one run without delta_m; job 5 failed, job 6 is still running
EW = [
    dict(
        test={"shape": {"accuracy": 0.5, "f1": 0.25}, "size": {"mae": 0.125, "r2": 0.5}},
        delta_m=2.0,
        tps=0.1,
        train_time=10.0,
        peak=100.0,
        objective=0.25,
    ),
    dict(
        test={"shape": {"accuracy": 0.75, "f1": 0.5}, "size": {"mae": 0.25, "r2": 0.5}},
        delta_m=4.0,
        tps=0.2,
        train_time=20.0,
        peak=200.0,
        objective=0.5,
    ),
    dict(
        test={"shape": {"accuracy": 0.625, "f1": 0.375}, "size": {"mae": None, "r2": 0.5}},
        delta_m=3.0,
        tps=0.3,
        train_time=30.0,
        peak=300.0,
        objective=0.75,
    ),
]
UW = [
    dict(
        test={"shape": {"accuracy": 0.875, "f1": 0.5}, "size": {"mae": 0.0625, "r2": 0.25}},
        delta_m=5.0,
        weights=(0.5, 2.0),
    ),
    dict(
        test={"shape": {"accuracy": 0.625, "f1": 0.5}, "size": {"mae": 0.125, "r2": 0.75}},
        delta_m=None,
        weights=(1.5, 1.0),
    ),
]
DWA = dict(test={"shape": {"accuracy": 0.5, "f1": 0.5}, "size": {"mae": 0.5, "r2": 0.0}}, delta_m=False)
STL = dict(
    test={"shape": {"accuracy": 0.9375, "f1": 0.875}, "size": {"mae": 0.03125, "r2": 0.875}},
    tps={"shape": 0.05, "size": 0.07},
    train_time={"shape": 4.0, "size": 6.0},
    peak={"shape": 150.0, "size": 120.0},
)
FAILURE = "Training stopped: 1 problem found\n  - size: non-finite loss at step 7 (epoch 2)"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "sweep"
    job = 0
    for seed, kw in enumerate(EW):
        write_run(root / str(job), seed=seed, weighting="ew", **kw)
        job += 1
    for seed, kw in enumerate(UW):
        write_run(root / str(job), seed=seed, weighting="uw", **kw)
        job += 1
    # job 5 failed, job 6 is running (no summary.json yet); job 10 sorts after 6, not after 1
    (root / "5").mkdir()
    (root / "5" / "config.yaml").write_text("seed: 0\n")
    (root / "5" / "error.json").write_text(json.dumps({"type": "TrainingError", "message": FAILURE}))
    (root / "6").mkdir()
    (root / "6" / "metrics.jsonl").write_text('{"split": "train", "step": 1}\n')
    write_run(root / "10", seed=0, weighting="dwa", **DWA)
    write_stl(root.parent / "stl", seed=0, **STL)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def report(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(text: str) -> dict[str, str]:
    """The printed table's lines by group label (the second column); a table wrapped into blocks
    of columns (each repeating # and group) gives each label its lines of every block, joined."""
    lines = text.splitlines()
    rows: dict[str, str] = {}
    starts = [i for i, ln in enumerate(lines) if ln.lstrip().startswith("#  group")]
    assert starts, text
    for start in starts:
        for ln in lines[start + 1 :]:
            if not ln.strip():
                break
            label = ln.split("  ")[1].strip()
            rows[label] = rows[label] + "  " + ln if label in rows else ln
    return rows


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    return {r["group"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def num(cell: str) -> float | None:
    return float(cell) if cell != "" else None


# ----------------------------------------------------------------------------- pure functions
def test_pareto_front_on_hand_made_points():
    # x: higher is better, y: lower is better
    pts = [
        (0.9, 0.30),  # 0: front (best x)
        (0.8, 0.10),  # 1: front
        (0.8, 0.10),  # 2: tie with 1: neither dominates the other, both on the front
        (0.7, 0.20),  # 3: dominated by 1 (lower x, higher y)
        (0.9, 0.40),  # 4: dominated by 0 (same x, worse y)
        (0.5, 0.05),  # 5: front (best y)
        (NAN, 0.01),  # 6: a NaN never counts, and dominates nothing
        (0.95, None),
    ]  # 7: a missing value likewise
    assert pareto_front(pts, ["higher", "lower"]) == [0, 1, 2, 5]
    # the other directions give another front: x lower and y higher is better
    assert pareto_front(pts, ["lower", "higher"]) == [3, 4, 5]  # 5 has the lowest x; 4: highest y; 3 beats 0,1,2
    # both higher: (0.9, 0.40) dominates (0.9, 0.30), (0.8, 0.10) x2, (0.7, 0.20) and (0.5, 0.05)
    assert pareto_front(pts, ["higher", "higher"]) == [4]
    assert pareto_front([(1.0, 2.0), (1.0, 2.0)], ["lower", "lower"]) == [0, 1]  # only ties
    assert pareto_front([], ["higher", "lower"]) == []
    with pytest.raises(ValueError, match="unknown direction"):
        pareto_front([(1, 2)], ["up-ish", "lower"])


def test_mean_std_and_rounding():
    s = mean_std([0.5, 0.75, None, NAN, 0.625])
    assert (s.mean, s.n) == ((0.5 + 0.75 + 0.625) / 3, 3)
    m = (0.5 + 0.75 + 0.625) / 3
    assert s.std == pytest.approx(math.sqrt(((0.5 - m) ** 2 + (0.75 - m) ** 2 + (0.625 - m) ** 2) / 2), rel=1e-12)
    assert mean_std([0.3]) == Stat(0.3, None, 1)  # one run: no std (not NaN, not 0)
    assert mean_std([None, NAN, float("inf")]) == Stat(None, None, 0)
    # mean ± std to the std's second significant digit; one value to 4 significant digits
    assert fmt_stat(Stat(0.234375, 0.02209708691207961, 2)) == "0.234 ± 0.022"
    assert fmt_stat(Stat(808.619140625, 3.38914070514021, 2)) == "808.6 ± 3.4"
    assert fmt_stat(Stat(-10.868681192398071, 7.246757118470531, 2)) == "-10.9 ± 7.2"
    assert fmt_stat(Stat(12.5, 3.0, 2)) == "12.5 ± 3.0"
    assert fmt_stat(Stat(0.5, 0.0, 3)) == "0.5000 ± 0"
    assert fmt_stat(Stat(0.0883883476, None, 1)) == "0.08839"
    assert fmt_stat(Stat(1234.5678, None, 1)) == "1235"
    assert fmt_stat(Stat(None, None, 0)) == ""


def test_mean_curve_over_seeds_with_different_lengths():
    xs, means, stds = mean_curve([{1: 1.0, 2: 3.0}, {1: 3.0, 2: 5.0, 3: 7.0}])
    assert xs == [1, 2, 3] and means == [2.0, 4.0, 7.0]
    assert stds[:2] == [pytest.approx(math.sqrt(2.0)), pytest.approx(math.sqrt(2.0))] and stds[2] is None


def test_discover_finds_jobs_in_order_and_lists_failed_ones(sweep):
    runs, skipped = discover([sweep, sweep.parent / "stl", sweep / "0"])  # a run given twice counts once
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "4", "10", "stl"]
    assert [r.kind for r in runs] == ["mtl"] * 6 + ["stl"]
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("5", "failed: TrainingError: Training stopped: 1 problem found - size: non-finite loss at step 7 (epoch 2)"),
        ("6", "no summary.json: still running, stopped (resume it with mtl-train resume=<dir>) or killed"),
    ]
    stl = runs[-1]  # the single-task runs together: both tasks' metrics, summed times, the largest peak
    assert stl.test == STL["test"] and stl.seed == 0
    assert stl.time_per_step_s == pytest.approx(0.05 + 0.07) and stl.time_per_epoch_s == 4.0 / 2 + 6.0 / 2
    assert stl.peak_memory_mb == 150.0


# ----------------------------------------------------------------------------- the command
def test_report_numbers_csv_and_markdown(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = report([str(sweep), str(sweep.parent / "stl"), "--out", str(out), "--no-plots"], capsys)
    assert code == 0, err
    assert text.startswith("7 runs in 4 groups, 2 skipped; test split, mean ± std over seeds; sorted by Δm (test)")
    assert "shared by all runs: trainer.max_epochs=2" in text

    # the numbers, from the values written above, with the arithmetic spelled out
    rows = read_csv(out / "report.csv")
    assert list(rows) == ["weighting=uw", "weighting=ew", "weighting=dwa", "stl"]  # Δm 5 > 3 > none; stl last
    ew, uw, dwa, stl = rows["weighting=ew"], rows["weighting=uw"], rows["weighting=dwa"], rows["stl"]
    assert (ew["n"], ew["seeds"], ew["weighting"], ew["kind"], stl["kind"], stl["weighting"]) == (
        "3",
        "0,1,2",
        "ew",
        "mtl",
        "stl",
        "",
    )
    assert num(ew["shape/accuracy_mean"]) == (0.5 + 0.75 + 0.625) / 3 == 0.625
    assert num(ew["shape/accuracy_std"]) == pytest.approx(math.sqrt((0.125**2 + 0.125**2 + 0.0) / (3 - 1)))
    assert num(ew["shape/f1_mean"]) == (0.25 + 0.5 + 0.375) / 3
    # seed 2's size/mae is NaN (null): the mean and std are over the two others
    assert num(ew["size/mae_mean"]) == (0.125 + 0.25) / 2 and ew["size/mae_n"] == "2"
    assert num(ew["size/mae_std"]) == pytest.approx(abs(0.25 - 0.125) / math.sqrt(2))
    assert (num(ew["size/r2_mean"]), num(ew["size/r2_std"])) == (0.5, 0.0)
    assert num(ew["delta_m_mean"]) == (2.0 + 4.0 + 3.0) / 3 and num(ew["delta_m_std"]) == 1.0
    assert num(ew["time_per_step_s_mean"]) == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    assert num(ew["time_per_epoch_s_mean"]) == (10.0 / 2 + 20.0 / 2 + 30.0 / 2) / 3 == 10.0
    assert num(ew["time_per_epoch_s_std"]) == 5.0  # 5, 10, 15
    assert (num(ew["peak_memory_mb_mean"]), num(ew["peak_memory_mb_std"])) == (200.0, 100.0)
    assert ew["peak_memory_kind"] == "process_max_rss" and ew["run_dirs"].split(";") == [
        str((sweep / j).resolve()) for j in ("0", "1", "2")
    ]
    assert num(uw["shape/accuracy_mean"]) == (0.875 + 0.625) / 2
    assert num(uw["shape/accuracy_std"]) == pytest.approx(0.25 / math.sqrt(2))
    # Δm of one of the two uw runs is null: its mean is the other's value, and no std (not NaN)
    assert (num(uw["delta_m_mean"]), uw["delta_m_std"], uw["delta_m_n"]) == (5.0, "", "1")
    # one run: every std empty; no delta_m key at all: the column is empty
    assert dwa["shape/accuracy_std"] == "" and (dwa["delta_m_mean"], dwa["delta_m_n"]) == ("", "0")
    assert num(stl["shape/accuracy_mean"]) == 0.9375 and num(stl["size/mae_mean"]) == 0.03125
    assert num(stl["time_per_step_s_mean"]) == pytest.approx(0.05 + 0.07)
    assert num(stl["time_per_epoch_s_mean"]) == 4.0 / 2 + 6.0 / 2 and num(stl["peak_memory_mb_mean"]) == 150.0
    assert "shape/loss_mean" not in ew  # the test loss is not a metric

    # the printed table and the Markdown show the CSV's numbers, rounded
    printed = table_rows(text)
    assert list(printed) == ["weighting=uw", "weighting=ew", "weighting=dwa", "stl"]
    md = (out / "report.md").read_text()
    md_rows = {ln.split(" | ")[1]: ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit()}
    for label, row in rows.items():
        for key in (
            "delta_m",
            "shape/accuracy",
            "shape/f1",
            "size/mae",
            "size/r2",
            "time_per_step_s",
            "time_per_epoch_s",
            "peak_memory_mb",
        ):
            cell = fmt_stat(Stat(num(row[f"{key}_mean"]), num(row[f"{key}_std"]), int(row[f"{key}_n"])))
            assert cell in printed[label] and f"| {cell} |" in md_rows[label], (label, key, cell)
    assert "0.62 ± 0.12" in printed["weighting=ew"]  # 0.625 ± 0.125 to two significant digits of the std
    assert "3.0 ± 1.0" in printed["weighting=ew"] and "10.0 ± 5.0" in printed["weighting=ew"]
    assert "| # | group | n | seeds | Δm % ↑ | shape/accuracy ↑ | shape/f1 ↑ | size/mae ↓ | size/r2 ↑ |" in md
    # skipped runs: printed and in the Markdown, with the failed run's error message
    assert f"{(sweep / '5').resolve()}: failed: TrainingError: Training stopped" in text
    assert "non-finite loss at step 7 (epoch 2)" in md and str((sweep / "6").resolve()) in md

    assert "wrote 2 files to" in text and not (out / "plots").exists()


def test_plots_are_png_files(sweep, tmp_path, capsys):
    # the uw group and the stl baseline: two primary tasks, so a Pareto front too
    code, text, err = report(
        [str(sweep / "3"), str(sweep / "4"), str(sweep.parent / "stl"), "--out", str(tmp_path)], capsys
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    # curves and weights per group; no weights for the baseline (it balances nothing)
    assert names == ["curves_01_weighting=uw.png", "curves_02_stl.png", "pareto.png", "weights_01_weighting=uw.png"]
    for p in (tmp_path / "plots").iterdir():
        data = p.read_bytes()
        assert data[:8] == PNG and len(data) > 5000, p
    assert "wrote 6 files to" in text


def test_group_by_config_values(tmp_path, capsys):
    # ew and uw runs at lr 1e-3 but different max_epochs overrides: grouped by the config's values
    d = tmp_path / "runs"
    write_run(d / "a", seed=0, weighting="ew", lr=0.01, **EW[0])
    write_run(d / "b", seed=1, weighting="ew", lr=0.01, extra=["trainer.max_epochs=3"], **EW[1])
    write_run(d / "c", seed=0, weighting="uw", lr=0.01, **UW[0])
    code, text, err = report(
        [str(d), "--group-by", "weighting.name,optimizer.lr", "--no-plots", "--metrics", "primary"], capsys
    )
    assert code == 0, err
    rows = read_csv(d / "report.csv")
    assert list(rows) == ["weighting.name=uw optimizer.lr=0.01", "weighting.name=ew optimizer.lr=0.01"]
    ew = rows["weighting.name=ew optimizer.lr=0.01"]
    assert (ew["n"], ew["weighting.name"], ew["optimizer.lr"]) == ("2", "ew", "0.01")
    assert num(ew["shape/accuracy_mean"]) == (0.5 + 0.75) / 2 and num(ew["size/mae_mean"]) == (0.125 + 0.25) / 2
    assert "shape/f1_mean" not in ew and "size/r2_mean" not in ew  # --metrics primary
    assert not (d / "plots").exists()
    # by default the differing overrides split a and b
    code, text, _ = report([str(d), "--no-plots"], capsys)
    assert code == 0 and list(read_csv(d / "report.csv")) == [  # by Δm: 5, (4), (2)
        "weighting=uw trainer.max_epochs=2",
        "weighting=ew trainer.max_epochs=3",
        "weighting=ew trainer.max_epochs=2",
    ]


def test_bad_arguments_exit_2_naming_the_problem(sweep, tmp_path, capsys):
    code, _, err = report([str(sweep), "--group-by", "weighting.nam", "--out", str(tmp_path)], capsys)
    assert code == 2 and "Config error" in err and "--group-by: no run's config.yaml has this key" in err
    assert "did you mean weighting.name" in err and "Traceback" not in err
    code, _, err = report([str(tmp_path / "nowhere")], capsys)
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such file or folder" in err
    code, _, err = report([str(sweep / "5")], capsys)  # only a failed run: nothing to report, and why
    assert code == 2 and "Data error" in err and "no finished run found (1 without summary.json)" in err
    assert "non-finite loss at step 7" in err
    code, _, _ = report([str(sweep), "--metrics", "some"], capsys)  # argparse
    assert code == 2


def test_without_matplotlib_plots_are_skipped_or_refused(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots_mod, "matplotlib_available", lambda: False)
    code, text, err = report([str(sweep), "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and 'plots skipped: matplotlib is not installed (pip install "mtl-cli[plots]")' in text
    assert (tmp_path / "a" / "report.csv").is_file() and not (tmp_path / "a" / "plots").exists()
    code, text, err = report([str(sweep), "--plots", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "--plots: matplotlib is not installed" in err
    assert 'fix: pip install "mtl-cli[plots]"' in err and not (tmp_path / "b").exists()


def test_unwritable_out_names_the_path(sweep, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code, _, err = report([str(sweep), "--out", str(tmp_path / "afile" / "out"), "--no-plots"], capsys)
    assert code == 2 and "Output error" in err and str(tmp_path / "afile" / "out" / "report.csv") in err
    assert "--out" in err and "Traceback" not in err


def test_report_on_a_real_run(tmp_path, capsys):
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    overrides = [*BASE, "trainer.max_epochs=1"]
    summary = train(compose(overrides), tmp_path / "run", overrides)
    code, text, err = report([str(tmp_path / "run"), "--no-plots"], capsys)
    assert code == 0, err
    (row,) = read_csv(tmp_path / "run" / "report.csv").values()
    assert row["n"] == "1" and row["seeds"] == "0" and row["group"] == "mtl"  # one group: nothing tells it apart
    flat = " ".join(text.split())  # the line of shared overrides is wrapped to the console's width
    assert "shared by all runs: backbone=mlp data.train_size=128" in flat and "trainer.max_epochs=1 " in flat
    for t, metrics in summary["test"].items():
        for m, v in metrics.items():
            if m != "loss":
                assert num(row[f"{t}/{m}_mean"]) == v and row[f"{t}/{m}_std"] == ""
    assert num(row["time_per_step_s_mean"]) == summary["time_per_step_s"]
    assert num(row["time_per_epoch_s_mean"]) == summary["train_time_s"] / summary["epochs"]
    assert num(row["peak_memory_mb_mean"]) == summary["peak_memory_mb"]


# ----------------------------------------------------------------------------- a real sweep
@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "mtl_cli.cli.train",
        "-m",
        "seed=0,1",
        "weighting=ew,uw",
        f"hydra.sweep.dir={root}",
        *BASE,
        "trainer.max_epochs=1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.mark.slow
def test_report_on_a_real_multirun(real_sweep, tmp_path, capsys):
    summaries = {j: json.loads((real_sweep / j / "summary.json").read_text()) for j in ("0", "1", "2", "3")}
    # Hydra's job order: seed=0 ew, seed=0 uw, seed=1 ew, seed=1 uw
    code, text, err = report([str(real_sweep), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "report.csv")
    assert sorted(rows) == ["weighting=ew", "weighting=uw"]
    for label, (a, b) in (("weighting=ew", ("0", "2")), ("weighting=uw", ("1", "3"))):
        row = rows[label]
        assert row["n"] == "2" and row["seeds"] == "0,1"
        sa, sb = summaries[a], summaries[b]
        for t, metrics in sa["test"].items():
            for m in metrics:
                if m == "loss":
                    continue
                x, y = sa["test"][t][m], sb["test"][t][m]
                assert num(row[f"{t}/{m}_mean"]) == pytest.approx((x + y) / 2, rel=1e-12, abs=1e-15)
                assert num(row[f"{t}/{m}_std"]) == pytest.approx(abs(x - y) / math.sqrt(2), rel=1e-9, abs=1e-15)
                cell = fmt_stat(Stat((x + y) / 2, abs(x - y) / math.sqrt(2), 2))
                assert cell in table_rows(text)[label]
        assert num(row["time_per_step_s_mean"]) == pytest.approx((sa["time_per_step_s"] + sb["time_per_step_s"]) / 2)
        epoch_times = [s["train_time_s"] / s["epochs"] for s in (sa, sb)]
        assert num(row["time_per_epoch_s_mean"]) == pytest.approx(sum(epoch_times) / 2)
        assert row["delta_m_mean"] == ""  # no baseline_dir
    md = (tmp_path / "report.md").read_text()
    assert md.count("| weighting=") == 2
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert len(pngs) == 4 and all((tmp_path / "plots" / p).read_bytes()[:8] == PNG for p in pngs)  # 3 tasks: no Pareto
    # grouped by config values instead: the same two groups
    code, _, _ = report(
        [str(real_sweep), "--out", str(tmp_path / "by"), "--group-by", "weighting.name", "--no-plots"], capsys
    )
    by = read_csv(tmp_path / "by" / "report.csv")
    assert code == 0 and sorted(by) == ["weighting.name=ew", "weighting.name=uw"]
    assert by["weighting.name=ew"]["shape/accuracy_mean"] == rows["weighting=ew"]["shape/accuracy_mean"]


def test_default_groups_ignore_seed_paths_and_spelling():
    from mtl_cli.report import Run, group_runs

    def run(name, overrides):
        return Run(path=Path(name), kind="mtl", tasks={}, test={}, overrides=overrides)

    runs = [
        run(
            "a",
            [
                "seed=0",
                "optimizer.lr=1e-3",
                "tasks.x.enabled=false",
                "run_dir=/a",
                "hydra.job.chdir=true",
                "baseline_dir=/stl0",
                "resume=auto",
            ],
        ),
        run("b", ["seed=1", "optimizer.lr=0.001", "tasks.x.enabled=False", "run_dir=/b", "baseline_dir=/stl1"]),
        run("c", ["seed=0", "optimizer.lr=0.01", "tasks.x.enabled=false", "run_dir=/c"]),
    ]
    groups = group_runs(runs)
    assert [[r.path.name for r in g.runs] for g in groups] == [["a", "b"], ["c"]]
    assert [g.label for g in groups] == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    assert [g.fields for g in groups] == [{"optimizer.lr": "0.001"}, {"optimizer.lr": "0.01"}]


def test_a_linear_single_task_reference_beside_a_run(tmp_path, capsys):
    """``baseline=stl backbone=mlp 'backbone.hidden=[]'``: one linear (logistic) model per task on
    the flattened input, trained and reported as the single-task baselines are; mtl-report shows
    it beside a multi-task run, each task's value being its linear run's own test metric."""
    from mtl_cli.config.compose import compose
    from mtl_cli.train.api import train

    overrides = [*BASE, "trainer.max_epochs=1"]
    train(compose(overrides), tmp_path / "run", overrides)
    linear = [*overrides, "baseline=stl", "backbone.hidden=[]"]
    train(compose(linear), tmp_path / "linear", linear)
    for task in ("shape", "size", "present"):
        data = json.loads((tmp_path / "linear" / task / "summary.json").read_text())
        assert data["parameters"]["shared"] == 0  # nothing between the input and the head
    code, text, err = report([str(tmp_path / "run"), str(tmp_path / "linear"), "--no-plots"], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "run" / "report.csv")
    stl = [r for r in rows.values() if r["group"].startswith("stl")]
    assert len(stl) == 1 and "backbone.hidden=[]" in stl[0]["group"]
    shape = json.loads((tmp_path / "linear" / "shape" / "summary.json").read_text())["test"]["shape"]
    assert num(stl[0]["shape/accuracy_mean"]) == shape["accuracy"]


def test_gradient_methods_refuse_a_model_without_shared_parameters(tmp_path, capsys):
    from mtl_cli.cli.train import main as train_main

    with pytest.raises(SystemExit) as e:
        train_main([*BASE, "trainer.max_epochs=1", "backbone.hidden=[]", "weighting=upgrad", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "weighting: this method combines the tasks' gradients on the shared parameters" in err
    assert "(got 'upgrad')" in err and "set weighting=ew" in err
