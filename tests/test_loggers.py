"""Experiment trackers (logger.backends, mtl_cli/train/loggers/): what MLflow and W&B hold is read
back and compared with the run's own files; a backend that fails, hangs or cannot keep up never
changes or stops the run; a missing package is a config error naming the extra.

MLflow runs against a real tracking store: a SQLite file here, and (slow) a real `mlflow server`
started on 127.0.0.1 by the test. W&B runs offline: its run file in the run directory is parsed
(the LevelDB-style log of protobuf records that `wandb sync` uploads).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_resume import BASE, Crash, crash_after, records, run

import mtl_cli.cli.train as cli
from mtl_cli.config.locate import ENV
from mtl_cli.config.schema import LOGGER_BACKENDS
from mtl_cli.config.typecheck import flatten
from mtl_cli.train import loggers
from mtl_cli.train.loggers import Backend, param_value, scalars

needs_mlflow = pytest.mark.skipif(
    not cli.installed("mlflow"), reason='mlflow is not installed: pip install "mtl-cli[mlflow]"'
)
needs_wandb = pytest.mark.skipif(
    not cli.installed("wandb"), reason='wandb is not installed: pip install "mtl-cli[wandb]"'
)

FAST = [*BASE, "trainer.max_epochs=2"]  # 8 steps, evaluations after steps 4 and 8


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder (./mlruns) goes here
    yield
    loggers.wait(30)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """metrics.jsonl of FAST without any tracker (timing left out)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    run(FAST, d)
    return records(d)


def expected_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metric name -> [(step, value)], from metrics.jsonl, as every tracker is given it."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k, v in scalars(r).items():
            out.setdefault(k, []).append((r["step"], v))
    return out


def expected_params(run_dir: Path) -> dict[str, str]:
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {k: param_value(v) for k, v in flatten(cfg).items()}


def mtl_train_after(prelude: str, args: list[str]) -> subprocess.CompletedProcess:
    """mtl-train with ``args`` in a process of its own, after the Python ``prelude`` ran there;
    its exit status is asserted to be 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV)}
    script = prelude + "import mtl_cli.cli.train as t\nt.main()\n"
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_opts(uri: str, *extra: str) -> list[str]:
    return ["logger=mlflow", f"logger.backends.mlflow.tracking_uri={uri}", *extra]


# ---------------------------------------------------------------------------------------------
# MLflow


def check_mlflow_run(uri: str, run_dir: Path, tmp: Path, status: str = "FINISHED") -> None:
    """What the MLflow run of ``run_dir`` holds equals the run directory: params = the flattened
    config, each metric's history = metrics.jsonl, artifacts = summary.json and best.pt."""
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(uri)
    r = client.get_run(state["run_id"])
    assert r.info.status == status
    assert r.data.params == expected_params(run_dir)
    want = expected_history(run_dir)
    assert set(r.data.metrics) == set(want)
    for key, points in want.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], key))
        assert got == sorted(points), key
    got_dir = tmp / f"artifacts-{state['run_id']}"
    got_dir.mkdir()
    client.download_artifacts(state["run_id"], "", str(got_dir))
    for name in ("summary.json", "config.yaml", "metrics.jsonl", "checkpoints/best.pt"):
        assert (got_dir / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert r.data.tags["mtl.run_dir"] == str(run_dir)


@needs_mlflow
@pytest.mark.slow  # a real store (default suite: the generic backends above)
def test_mlflow_sqlite_store_holds_the_config_every_record_and_the_run_files(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run(FAST + mlflow_opts(uri), tmp_path / "run")
    assert loggers.wait(60)
    check_mlflow_run(uri, tmp_path / "run", tmp_path)
    # the values a user looks for: 8 train steps, evaluations at steps 4 and 8, the test at the selected step
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    hist = expected_history(tmp_path / "run")
    assert [s for s, _ in hist["loss/shape"]] == list(range(1, 9))
    assert [s for s, _ in hist["val/score"]] == [4, 8]
    assert hist["test/shape/accuracy"] == [(4 * summary["selected_epoch"], summary["test"]["shape"]["accuracy"])]


@needs_mlflow
@pytest.mark.slow  # a real store (default suite: the generic backends above)
def test_mlflow_run_continues_after_a_resume(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    d = tmp_path / "run"
    with monkeypatch.context() as m:
        crash_after(m, 8)  # checkpoint at step 6; step 7 is logged, then replayed after the resume
        with pytest.raises(Crash):
            run(FAST + mlflow_opts(uri), d)
    assert loggers.wait(60)
    first = json.loads((d / "mlflow.json").read_text())["run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert client.get_run(first).info.status == "FAILED"  # error.json: the crash
    run(FAST + mlflow_opts(uri, "resume=auto"), d)
    assert loggers.wait(60)
    assert json.loads((d / "mlflow.json").read_text())["run_id"] == first  # the same MLflow run
    r = client.get_run(first)
    assert r.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(first, "loss/shape")]
    assert sorted(set(steps)) == list(range(1, 9)) and steps.count(7) == 2  # step 7 twice: before and after
    assert len(client.search_runs([r.info.experiment_id])) == 1


@needs_mlflow
@pytest.mark.slow  # a real store (default suite: the generic backends above)
def test_sweep_jobs_are_child_runs_of_one_parent(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = tmp_path / "sweep"
    try:
        cli.main(["-m", "seed=0,1", f"hydra.sweep.dir={sweep}", *FAST, *mlflow_opts(uri)])
    except SystemExit as e:
        pytest.fail(f"exit {e.code}: {capsys.readouterr().err}")
    assert loggers.wait(60)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mtl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mtl.sweep_parent") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags["mtl.sweep_job"] for r in children) == ["0", "1"]
    for r in children:
        job = sweep / r.data.tags["mtl.sweep_job"]
        assert r.data.params["seed"] == r.data.tags["mtl.sweep_job"]
        assert r.info.status == "FINISHED" and r.data.tags["mtl.run_dir"] == str(job)
        check_mlflow_run(uri, job, tmp_path)


@needs_mlflow
def test_an_unreachable_mlflow_server_warns_once_and_the_run_is_the_same(tmp_path, reference):
    port = free_port()  # nothing listens there
    t0 = time.perf_counter()
    summary = run(FAST + mlflow_opts(f"http://127.0.0.1:{port}"), tmp_path / "run")
    assert loggers.wait(30)
    assert time.perf_counter() - t0 < 60
    assert summary["steps"] == 8
    assert records(tmp_path / "run") == reference
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("logger backend mlflow failed and is off for the rest of the run") == 1, log


def test_a_missing_backend_package_is_a_config_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setattr(cli, "_hydra_task", lambda: pytest.fail("the run started"))
    with pytest.raises(SystemExit) as e:
        cli.main([*FAST, "logger=[mlflow,wandb]"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "logger.backends.mlflow: MLflow tracking needs the mlflow package, which is not installed" in err
    assert 'fix: pip install "mtl-cli[mlflow]"' in err
    assert "logger.backends.wandb: Weights & Biases logging needs the wandb package, which is not installed" in err
    assert 'fix: pip install "mtl-cli[wandb]"' in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unknown_backends_and_keys_are_config_errors(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_hydra_task", lambda: pytest.fail("the run started"))
    with pytest.raises(SystemExit) as e:
        cli.main([*FAST, "++logger.backends.mlfow={}", "++logger.backends.tensorboard.colour=1"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "logger.backends.mlfow: unknown logger backend" in err and "did you mean logger.backends.mlflow?" in err
    assert "logger.backends.tensorboard.colour: unknown key" in err


# ---------------------------------------------------------------------------------------------
# backends that fail, hang or cannot keep up (registered for the test only)


class _Recorder(Backend):
    calls: list = []
    gate: threading.Event | None = None
    fail_at: int | None = None

    def open(self, kept):
        type(self).calls.append(("open", len(kept)))

    def log(self, records):
        cls = type(self)
        if cls.gate is not None:
            cls.gate.wait(60)
        n = sum(c[0] == "log" for c in cls.calls)
        if cls.fail_at is not None and n >= cls.fail_at:
            raise OSError(28, "No space left on device")
        cls.calls.append(("log", list(records)))

    def finish(self, end):
        type(self).calls.append(("finish", end.status, sorted(end.files)))


@pytest.fixture
def recorder(monkeypatch):
    LOGGER_BACKENDS.names()  # (loads the registry)

    class Rec(_Recorder):
        calls: list = []

    monkeypatch.setitem(LOGGER_BACKENDS._items, "recorder", Rec)
    return Rec


def test_a_hung_backend_never_blocks_the_run_and_gets_every_record_later(tmp_path, recorder, reference):
    recorder.gate = threading.Event()  # a server that does not answer
    summary = run(FAST + ["++logger.backends.recorder={}"], tmp_path / "run")  # returns while the backend hangs
    assert summary["steps"] == 8
    assert not any(c[0] == "finish" for c in recorder.calls)
    recorder.gate.set()
    assert loggers.wait(30)
    sent = [r for c in recorder.calls if c[0] == "log" for r in c[1]]
    assert [{k: v for k, v in r.items() if k != "samples_per_s"} for r in sent] == reference
    assert sent == [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    end = recorder.calls[-1]
    assert end[0] == "finish" and end[1] == "FINISHED"
    assert {"summary.json", "config.yaml", "metrics.jsonl", "checkpoints/best.pt"} <= set(end[2])


def test_a_backend_that_cannot_keep_up_drops_records_with_one_warning(tmp_path, recorder, reference):
    recorder.gate = threading.Event()
    run(FAST + ["++logger.backends.recorder.queue_size=3"], tmp_path / "run")
    recorder.gate.set()
    assert loggers.wait(30)
    assert records(tmp_path / "run") == reference
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("logger backend recorder cannot keep up") == 1, log


def test_a_failing_backend_warns_once_and_the_run_is_the_same(tmp_path, recorder, reference):
    recorder.fail_at = 2  # disk full at its third batch
    recorder.threaded = False  # inline, like TensorBoard: raised in the trainer's call
    run(FAST + ["++logger.backends.recorder={}"], tmp_path / "run")
    assert records(tmp_path / "run") == reference
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("logger backend recorder failed and is off for the rest of the run (OSError") == 1, log
    assert [c[0] for c in recorder.calls] == ["open", "log", "log"]  # nothing after the failure, no finish


def test_mtl_train_waits_for_a_tracker_still_starting_before_the_exit_hooks(tmp_path):
    """A tracker that registers an exit hook while it starts (W&B does: its service's teardown,
    its temporary folder's clean-up) and is still starting when a short run ends: mtl-train waits
    for it to finish before the exit hooks run. They once ran first, and W&B lost its service
    ("Connection lost", "Failed to read port info"). Here the backend's open returns only 2 s after
    the run wrote summary.json, so without that wait its hook runs before its finish."""
    d, trace = tmp_path / "run", tmp_path / "trace.txt"
    script = (
        "import atexit, time\n"
        "from pathlib import Path\n"
        "from mtl_cli.config.schema import LOGGER_BACKENDS\n"
        "from mtl_cli.train.loggers import Backend\n"
        f"trace, summary = Path({str(trace)!r}), Path({str(d / 'summary.json')!r})\n"
        "def say(what):\n"
        "    with trace.open('a') as f: f.write(what + '\\n')\n"
        "class Late(Backend):\n"
        "    def open(self, kept):\n"
        "        atexit.register(say, 'exit hook')\n"
        "        deadline = time.time() + 120\n"
        "        while not summary.exists() and time.time() < deadline: time.sleep(0.05)\n"
        "        time.sleep(2.0)\n"
        "        say('opened')\n"
        "    def finish(self, end): say('finished ' + end.status)\n"
        "LOGGER_BACKENDS.names()\n"
        "LOGGER_BACKENDS._items['late'] = Late\n"
    )
    mtl_train_after(script, [*FAST, "++logger.backends.late={}", f"run_dir={d}"])
    assert trace.read_text().splitlines() == ["opened", "finished FINISHED", "exit hook"]


def test_a_failing_tensorboard_warns_once_and_the_run_is_the_same(tmp_path, monkeypatch, reference):
    pytest.importorskip("tensorboard")
    from mtl_cli.train.rundir import TensorBoardSink

    def full(self, record, flush=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TensorBoardSink, "add", full)
    run(FAST + ["logger.tensorboard=true"], tmp_path / "run")
    assert records(tmp_path / "run") == reference
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("logger backend tensorboard failed") == 1, log


# ---------------------------------------------------------------------------------------------
# W&B, offline


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``): a 7-byte header, then
    LevelDB log blocks of 32 KiB, each record in chunks (7-byte chunk header: CRC, length, type).
    W&B's process may still be writing it: a chunk not yet whole ends the list (read it again)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header: padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + n > len(data):
            break
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL, LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def finished_wandb_records(run_dir: Path) -> tuple[dict, list, Path]:
    """The W&B state of ``run_dir``, its run file's records and the run's folder, once the file
    holds the exit record (W&B's own process writes it behind run.finish())."""
    state = json.loads((run_dir / "wandb.json").read_text())
    (folder,) = (run_dir / "wandb").glob(f"offline-run-*-{state['id']}")
    deadline = time.time() + 60
    while True:
        recs = wandb_records(folder / f"run-{state['id']}.wandb")
        if any(r.WhichOneof("record_type") == "exit" for r in recs):
            return state, recs, folder
        assert time.time() < deadline, "the W&B run file has no exit record"
        time.sleep(0.2)


def _key(item) -> str:
    """A W&B history or summary item's key (a key with "/" may come as its nested parts)."""
    return item.key or "/".join(item.nested_key)


@needs_wandb
@pytest.mark.slow  # W&B's service starts in each (default suite: the generic backends)
def test_wandb_offline_run_holds_the_config_and_every_record(tmp_path):
    d = tmp_path / "run"
    run(FAST + ["logger=wandb", "logger.backends.wandb.tags=[ci]"], d)
    assert loggers.wait(60)
    state, recs, folder = finished_wandb_records(d)
    (info,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
    assert info.run_id == state["id"] and info.display_name == "run" and list(info.tags) == ["ci"]
    config = {i.key: json.loads(i.value_json) for i in info.config.update if i.key != "_wandb"}
    import yaml

    assert config == flatten(yaml.safe_load((d / "config.yaml").read_text()))
    rows = [{_key(i): json.loads(i.value_json) for i in r.history.item} for r in recs if r.history.item]
    got: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for k, v in row.items():
            if not k.startswith("_") and k != "trainer/step":
                got.setdefault(k, []).append((row["trainer/step"], v))
    assert got == expected_history(d)
    summary = json.loads((d / "summary.json").read_text())
    final = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            final |= {_key(i): json.loads(i.value_json) for i in r.summary.update}
    assert final["test/shape/accuracy"] == summary["test"]["shape"]["accuracy"]
    assert final["objective"] == summary["objective"]["value"]
    assert (folder / "files" / "summary.json").read_bytes() == (d / "summary.json").read_bytes()


@needs_wandb
@pytest.mark.slow  # W&B's service starts in each (default suite: the generic backends)
def test_mtl_train_ends_its_wandb_run_before_wandb_exit_hook(tmp_path):
    """The command line, in a process of its own: W&B's exit hook (registered in wandb.init, so it
    runs before any hook of ours) must find the run already ended by our logger thread. It once
    ended the run under that thread (now and then, as threads were scheduled): W&B refused the
    summary ("called after exit"), the backend warned that it failed, and the W&B run lacked the
    test metrics. Here the thread's finish starts 1 s late, so that order is certain if the
    process does not wait for it."""
    d = tmp_path / "run"
    late_finish = (
        "import time, mtl_cli.train.loggers.wandb_backend as w\n"
        "finish = w.WandbBackend.finish\n"
        "w.WandbBackend.finish = lambda self, end: (time.sleep(1.0), finish(self, end))[1]\n"
    )
    proc = mtl_train_after(late_finish, [*FAST, "logger=wandb", f"run_dir={d}"])
    assert "logger backend wandb failed" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    _, recs, _ = finished_wandb_records(d)
    (exit_rec,) = [r.exit for r in recs if r.WhichOneof("record_type") == "exit"]
    assert exit_rec.exit_code == 0
    final = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            final |= {_key(i): json.loads(i.value_json) for i in r.summary.update}
    summary = json.loads((d / "summary.json").read_text())
    assert final["objective"] == summary["objective"]["value"]
    assert final["test/shape/accuracy"] == summary["test"]["shape"]["accuracy"]


# ---------------------------------------------------------------------------------------------
# a real MLflow tracking server (slow: it takes about 20 s to start)


@pytest.fixture
def mlflow_server(tmp_path):
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None or not cli.installed("mlflow"):
        pytest.skip('mlflow is not installed: pip install "mtl-cli[mlflow]"')
    import importlib.metadata

    if int(importlib.metadata.version("sqlalchemy").split(".")[0]) < 2:
        pytest.skip(
            "mlflow server needs SQLAlchemy 2, and the optuna extra (the Hydra plugin's Optuna 2.10) pins "
            "SQLAlchemy<2 in this environment: the server runs from an environment of its own (docs/ecosystem.md)"
        )
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    cmd = [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += [
        "--backend-store-uri",
        f"sqlite:///{server_dir}/db.sqlite",
        "--artifacts-destination",
        str(server_dir / "art"),
    ]
    proc = subprocess.Popen(cmd, cwd=server_dir, stdout=subprocess.DEVNULL, stderr=open(server_dir / "log", "w"))
    uri = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow server did not start:\n" + (server_dir / "log").read_text()[-3000:])
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_a_real_mlflow_server_holds_the_config_every_record_and_the_run_files(tmp_path, mlflow_server):
    run(FAST + mlflow_opts(mlflow_server), tmp_path / "run")
    assert loggers.wait(120)
    check_mlflow_run(mlflow_server, tmp_path / "run", tmp_path)
    assert os.path.isdir(tmp_path / "server" / "art")  # artifacts went through the server
