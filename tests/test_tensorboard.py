"""logger.tensorboard=true: TensorBoard event files in <run_dir>/tensorboard/ hold every record of
metrics.jsonl as scalars at the record's step (val and test under their split), also after a
resume; without the tensorboard package the option is a config error naming the extra."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_resume import BASE, Crash, crash_after, run

import mtl_cli.cli.train as cli
from mtl_cli.config.locate import ENV
from mtl_cli.train.rundir import TensorBoardSink

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason='tensorboard is not installed: pip install "mtl-cli[tensorboard]"',
)
TB = [*BASE, "logger.tensorboard=true"]
FIELDS = ("split", "epoch", "step")


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from metrics.jsonl: train (and gradient) records under their own
    keys, val and test records under ``<split>/``; null values left out; float32 as stored."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        prefix = f"{r['split']}/" if r["split"] in ("val", "test") else ""
        for k, v in r.items():
            if k in FIELDS or v is None:
                continue
            out.setdefault(prefix + k, []).append((r["step"], float(np.float32(v))))
    return out


def event_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@needs_tensorboard
def test_event_files_hold_every_record_of_metrics_jsonl(tmp_path):
    run(TB + ["trainer.max_epochs=2"], tmp_path / "run")
    want = expected_scalars(tmp_path / "run")
    got = event_scalars(tmp_path / "run")
    assert got == want
    # what a user looks for, at the expected steps: 8 optimizer steps, evaluations after steps 4 and 8
    names = ("shape", "size", "present")
    for n in names:
        assert [s for s, _ in got[f"loss/{n}"]] == list(range(1, 9))
        assert [s for s, _ in got[f"weight/{n}"]] == list(range(1, 9))
        assert [s for s, _ in got[f"val/{n}/{'accuracy' if n != 'size' else 'mae'}"]] == [4, 8]
    for tag in ("loss", "lr", "samples_per_s"):
        assert len(got[tag]) == 8
    assert [s for s, _ in got["val/score"]] == [4, 8]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    test_step = 4 * summary["selected_epoch"]  # the test record sits at the selected checkpoint's step
    assert got["test/shape/accuracy"] == [(test_step, float(np.float32(summary["test"]["shape"]["accuracy"])))]
    assert not set(got) & {"epoch", "step", "split", "val/epoch", "test/step"}


@needs_tensorboard
def test_a_resumed_run_rewrites_the_event_files_without_duplicates(tmp_path, monkeypatch):
    orig_add = TensorBoardSink.add

    def add_and_flush(self, record, flush=True):  # every event on disk at once, as a long run's would be
        orig_add(self, record, flush)
        self.writer.flush()

    monkeypatch.setattr(TensorBoardSink, "add", add_and_flush)
    d = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_after(m, 8)  # last checkpoint at step 6; step 7 is logged, then replayed after the resume
        with pytest.raises(Crash):
            run(TB, d)
    before = event_scalars(d)
    assert [s for s, _ in before["loss/shape"]] == list(range(1, 8))
    run(TB + ["resume=auto"], d)
    got = event_scalars(d)
    assert got == expected_scalars(d)
    assert [s for s, _ in got["loss/shape"]] == list(range(1, 13))  # each step once
    assert len(list((d / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_tensorboard_missing_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_hydra_task", lambda: pytest.fail("the run started"))
    with pytest.raises(SystemExit) as e:
        cli.main(TB)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "logger.tensorboard: TensorBoard event files need the tensorboard package, which is not installed" in err
    assert 'fix: pip install "mtl-cli[tensorboard]"' in err
