"""A checkpoint or run directory from elsewhere (issue 12, items 2, 8 and 9).

- Its plain data is never trusted as a file name: the top-k list names only the files TopK makes
  itself, inside checkpoints/top/ of the run; anything else is refused before a file is touched.
- A damaged or crafted file is a Checkpoint error (exit 2), never a traceback: a fuzz of random
  bytes, truncations, byte flips and structurally wrong dicts.
- resume=auto never starts over a folder (or anything but a file) named checkpoints/last.pt.
- A full disk while writing a checkpoint is an Output error (exit 2) naming the file; the
  temporary file is removed and the previous checkpoint is whole.
"""

from __future__ import annotations

import copy
import errno
import io
import math
import os
import random
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import mtl_cli.cli.train as cli
import mtl_cli.train.checkpoint as ckpt_mod
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.train.api import train
from mtl_cli.train.checkpoint import CheckpointError, find_checkpoint, key_path, load_checkpoint, save_checkpoint
from mtl_cli.train.rundir import OutputError

# an MLP with 8 hidden units, 3 tasks, 64 training images in batches of 32: 2 steps per epoch
BASE = [
    "backbone=mlp",
    "backbone.hidden=[8]",
    "data.train_size=64",
    "data.val_size=32",
    "data.test_size=32",
    "data.image_size=16",
    "tasks.segmentation.enabled=false",
    "trainer.batch_size=32",
    "trainer.max_epochs=2",
    "trainer.save_top_k=1",
    "trainer.progress=false",
    "device=cpu",
    "logger.console_summary=false",
]
RESUME = BASE + ["trainer.max_epochs=3", "resume=auto"]


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch, tmp_path):
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished 2-epoch run with one top-k checkpoint (checkpoints/top/epoch=000E-step=000000S.pt)."""
    d = tmp_path_factory.mktemp("done") / "run"
    train(compose(BASE), d)
    return d


def copy_run(done: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(done, run, symlinks=True)
    return run


def rewrite(path: Path, change) -> None:
    """Load ``path``, apply ``change`` to the state, write it back (a valid torch file)."""
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _exit(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- item 2: top-k names are not trusted
def _top_file(run: Path) -> Path:
    (f,) = (run / "checkpoints" / "top").glob("*.pt")
    return f


def _entries(name: str):
    return lambda s: s["top_k"].__setitem__("entries", [[-1e9, 0, 0, name]])


def _attack(kind: str, run: Path, tmp_path: Path) -> tuple[Path, str]:
    """Prepare ``run`` for one attack; returns (the victim file, a word the refusal must name)."""
    last = run / "checkpoints" / "last.pt"
    victim = tmp_path / "victim.pt"
    victim.write_text("precious")
    if kind == "absolute path":
        rewrite(last, _entries(str(victim)))
        return victim, str(victim)
    if kind == "dot-dot":
        rewrite(last, _entries("../../../victim.pt"))  # from run/checkpoints/top to tmp_path
        return victim, "../../../victim.pt"
    if kind == "not its own name":  # a bare name inside top/, but not a file TopK made
        victim = run / "checkpoints" / "top" / "mine.pt"
        victim.write_text("precious")
        rewrite(last, _entries("mine.pt"))
        return victim, "mine.pt"
    if kind == "top folder links out":  # top/ is a link to a folder outside the run, holding a .pt
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        victim = outside / "precious.pt"
        victim.write_text("precious")
        top = run / "checkpoints" / "top"
        shutil.move(str(top), str(outside / "orig"))
        top.symlink_to(outside)
        return victim, str(top)
    if kind == "entry file links out":  # the entry's own name in top/ is a link to a file outside
        f = _top_file(run)
        f.unlink()
        f.symlink_to(victim)
        return victim, f.name
    raise AssertionError(kind)


ATTACKS = ["absolute path", "dot-dot", "not its own name", "top folder links out", "entry file links out"]


@pytest.mark.parametrize("kind", ATTACKS)
def test_a_crafted_top_k_list_deletes_nothing_and_is_refused(done, tmp_path, kind):
    """The issue's attack: ``top_k.entries = [[-1e9, 0, 0, "/abs/victim"]]``, save_top_k=1 and a
    resume deleted the victim (the new best pushed the crafted entry out and TopK unlinked it).
    Now every variant is refused before any file is touched."""
    run = copy_run(done, tmp_path)
    victim, word = _attack(kind, run, tmp_path)
    before = sorted(p.name for p in (run / "checkpoints").rglob("*"))
    kept = {n: (run / n).read_bytes() for n in ("summary.json", "metrics.jsonl", "checkpoints/last.pt")}
    try:
        train(compose(RESUME), run)
        refused = None
    except CheckpointError as e:
        refused = e
    assert victim.exists() and victim.read_text() == "precious", f"{victim} was deleted"
    assert refused is not None, "the resume went on"
    assert word in str(refused) and ("top_k.entries" in str(refused) or "top-k checkpoints" in str(refused))
    assert refused.exit_code == 2
    assert sorted(p.name for p in (run / "checkpoints").rglob("*")) == before  # nothing removed in the run either
    assert all((run / n).read_bytes() == b for n, b in kept.items())  # the run is as it was


def test_the_crafted_top_k_list_through_the_cli_exits_2_naming_the_file_and_entry(done, tmp_path, capsys):
    run = copy_run(done, tmp_path)
    victim, _ = _attack("absolute path", run, tmp_path)
    code, err = _exit(RESUME + [f"run_dir={run}"], capsys)
    assert code == 2 and victim.exists()
    assert "Checkpoint error" in err and "Traceback" not in err
    assert str(run / "checkpoints" / "last.pt") in err and "top_k.entries[0]" in err and str(victim) in err


def test_an_honest_resume_keeps_and_replaces_top_k_files(done, tmp_path):
    """The control: the same resume of the untouched run goes on, and top/ holds exactly the list."""
    run = copy_run(done, tmp_path)
    s = train(compose(RESUME), run)
    assert s["epochs"] == 3
    entries = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["top_k"]["entries"]
    assert len(entries) == 1
    assert sorted(p.name for p in (run / "checkpoints" / "top").iterdir()) == [entries[0][3]]


BAD_ENTRIES = [
    ("absolute", [[0.5, 1, 2, "/etc/passwd"]], "top_k.entries[0]"),
    ("dot-dot", [[0.5, 1, 2, "../last.pt"]], "top_k.entries[0]"),
    ("separator", [[0.5, 1, 2, "top/epoch=0001-step=0000002.pt"]], "top_k.entries[0]"),
    ("another entry's name", [[0.5, 1, 3, "epoch=0001-step=0000002.pt"]], "top_k.entries[0]"),
    ("name not a string", [[0.5, 1, 2, 7]], "top_k.entries[0]"),
    ("nan score", [[math.nan, 1, 2, "epoch=0001-step=0000002.pt"]], "top_k.entries[0][0]"),
    ("inf score", [[math.inf, 1, 2, "epoch=0001-step=0000002.pt"]], "top_k.entries[0][0]"),
    ("string score", [["1", 1, 2, "epoch=0001-step=0000002.pt"]], "top_k.entries[0][0]"),
    ("bool score", [[True, 1, 2, "epoch=0001-step=0000002.pt"]], "top_k.entries[0][0]"),
    ("negative epoch", [[0.5, -1, 2, "epoch=-001-step=0000002.pt"]], "top_k.entries[0][1]"),
    ("float step", [[0.5, 1, 2.0, "epoch=0001-step=0000002.pt"]], "top_k.entries[0][2]"),
    ("three items", [[0.5, 1, 2]], "top_k.entries[0]"),
    ("not a list", "epoch=0001-step=0000002.pt", "top_k.entries"),
    ("twice", [[0.5, 1, 2, "epoch=0001-step=0000002.pt"]] * 2, "top_k.entries[1]"),
]


@pytest.mark.parametrize("entries,where", [pytest.param(e, w, id=i) for i, e, w in BAD_ENTRIES])
def test_every_top_k_entry_is_checked_when_the_checkpoint_is_read(done, tmp_path, entries, where):
    p = tmp_path / "last.pt"
    shutil.copy(done / "checkpoints" / "last.pt", p)
    rewrite(p, lambda s: s["top_k"].__setitem__("entries", entries))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert f"{p}: {where} " in str(e.value)


def test_the_top_k_list_itself_refuses_names_it_did_not_make(tmp_path):
    """TopK.load_state_dict checks a list given to it directly as well (not only via load_checkpoint)."""
    top = ckpt_mod.TopK(1, tmp_path / "run" / "checkpoints" / "top")
    with pytest.raises(CheckpointError, match=r"top_k\.entries\[0\]"):
        top.load_state_dict({"entries": [[1.0, 0, 0, str(tmp_path / "victim")]]})
    assert top.entries == []


def test_a_planted_temporary_link_is_not_written_through(tmp_path):
    """checkpoints/last.pt.tmp planted as a link to a victim: the write replaces the link, never
    the victim (before, open(tmp, "wb") wrote the checkpoint into the victim)."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    path.with_name("last.pt.tmp").symlink_to(victim)
    save_checkpoint({"step": 1}, path)
    assert victim.read_text() == "precious"
    assert torch.load(path, weights_only=True)["step"] == 1 and not path.is_symlink()
    assert not path.with_name("last.pt.tmp").exists()


# ---------------------------------------------------------------- item 9: resume=auto and odd files
@pytest.mark.parametrize("what", ["folder", "link to nothing", "pipe"])
def test_resume_auto_never_starts_over_something_named_last_pt(tmp_path, what):
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    if what == "folder":
        last.mkdir()
    elif what == "link to nothing":
        last.symlink_to(tmp_path / "gone.pt")
    else:
        os.mkfifo(last)
    with pytest.raises(CheckpointError) as e:
        find_checkpoint("auto", tmp_path / "run")
    assert str(last) in str(e.value) and "resume=auto does not start the run over it" in str(e.value)
    assert find_checkpoint("auto", tmp_path / "other") is None  # nothing there: a new run, as before


def test_resume_auto_with_a_folder_named_last_pt_exits_2_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "last.pt").mkdir(parents=True)
    code, err = _exit(BASE + [f"run_dir={run}", "resume=auto"], capsys)
    assert code == 2, err
    assert "Checkpoint error" in err and str(run / "checkpoints" / "last.pt") in err and "is a folder" in err
    assert "Traceback" not in err
    assert not (run / "metrics.jsonl").exists()  # nothing trained (before: a new run over it)


# ---------------------------------------------------------------- item 9: the fuzz of load_checkpoint
def same(a, b) -> bool:
    """Equal content: tensors bitwise (and dtype), NaN equal to NaN, containers item by item."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _at(state, path):
    for k in path[:-1]:
        state = state[k]
    return state


def _structural_cases(state: dict) -> list[tuple[str, tuple, object, str]]:
    """(op, path, value, the key the refusal must name): each makes a loadable but wrong checkpoint.
    op: "del" removes the key, "set" puts ``value`` there."""
    model_key = next(iter(state["model"]))
    weight_key = next(iter(state["weighting"]))
    ds = next(iter(state["stream"]["pass_no"]))
    ref = next(iter(state["selector"]["reference"]))
    u8 = torch.zeros(10, dtype=torch.uint8)
    gen_f = state["rng"]["torch"].float()
    names = "epoch=0001-step=0000002.pt"
    cases: list[tuple[str, tuple, object, str | None]] = []

    def add(path, values=(), delete=True, expect=None):
        if delete:
            cases.append(("del", path, None, expect))
        for v in values:
            cases.append(("set", path, v, expect))

    ints = ("bad", None, -1, 1.5, True, torch.tensor(1))
    add(("kind",), (7, None, ["last"]))
    add(("task_names",), ("shape", None, [], {"a": 1}))
    add(("task_names", 0), (7, None), delete=False)
    add(("model",), ("bad", None, [1], torch.zeros(2)))
    add(("model", model_key), ("bad", None, 1.0, [1.0]), delete=False)
    add(("optimizer",), ("bad", None, []))
    add(("optimizer", "param_groups"), ("bad", None, {}))
    add(("optimizer", "param_groups", 0), ("bad", None, [0]), delete=False)
    add(("optimizer", "param_groups", 0, "params"), ("bad", None, 0))
    add(("optimizer", "param_groups", 0, "params", 0), ints, delete=False)
    add(("optimizer", "state"), ("bad", None, []))
    add(("optimizer", "state", 0), ("bad", None, [1]), delete=False)
    add(("scheduler",), ("bad", 1, [1]))
    add(("scaler",), ("bad", None, [1]))
    add(("weighting",), ("bad", None, [1]))
    add(("weighting", weight_key), ("bad", None, 2.0), delete=False)
    add(("epoch",), ints)
    add(("step",), ints)
    add(("progress",), ("bad", None, [1]))
    for k in ("epoch", "step", "micro"):
        add(("progress", k), ints)
    add(("progress", "train_time"), ("bad", None, math.nan, math.inf, -1.0, True))
    add(("progress", "extra"), (1,), delete=False)
    add(("selector",), ("bad", None, []))
    add(("selector", "reference"), ("bad", 1, [1]))
    add(("selector", "reference", ref), ("bad", None, [1.0]), delete=False)
    add(("selector", "reference", "no such task"), (0.5,), delete=False)
    add(("selector", "best_score"), ("bad", None, math.nan, math.inf, True))
    add(("selector", "best_epoch"), ("bad", -1, 1.5), expect=None)
    add(("history",), ("bad", None, {}))
    add(("history", 0), ("bad", None, [1]), delete=False)
    add(("history", 0, "epoch"), ints)
    add(("history", 0, "step"), ints)
    add(("history", 0, "score"), (torch.zeros(1), [1], {"a": 1}), delete=False)
    add(("top_k",), ("bad", None, []))
    add(("top_k", "entries"), ("bad", None, {}))
    add(("top_k", "entries", 0), ("bad", None, [1, 2]), delete=False)
    add(("top_k", "entries", 0, 0), ("bad", None, math.nan, math.inf), delete=False)
    add(("top_k", "entries", 0, 1), ints, delete=False)
    add(("top_k", "entries", 0, 2), ints, delete=False)
    for v in ("/abs/victim", "../" + names, "top/" + names, 7, None, "epoch=0009-step=0000002.pt"):
        cases.append(("set", ("top_k", "entries", 0, 3), v, "top_k.entries[0]"))
    add(("stream",), ("bad", None, []))
    for k in ("pass_no", "taken"):
        add(("stream", k), ("bad", None, [1]))
        add(("stream", k, ds), ints, delete=False)
    cases.append(("del", ("stream", "pass_no", ds), None, "stream.taken"))
    add(("stream", "position"), ints)
    add(("stream", "epoch_generator"), ("bad", None, u8, gen_f))
    add(("stream", "epoch_turn"), ints)
    add(("accumulators",), ("bad", None, []))
    for k in ("loss", "weight", "count"):
        add(("accumulators", k), ("bad", None, torch.zeros(7), torch.zeros(3, dtype=torch.long)))
    add(("accumulators", "samples"), ints)
    add(("skipped",), ints)
    add(("metrics_records",), ints)
    add(("rng",), ("bad", None, []))
    add(("rng", "torch"), ("bad", None, u8, gen_f))
    add(("rng", "python"), ("bad", None, [3, [0] * 10, None], [99, state["rng"]["python"][1], None]))
    numpy = state["rng"]["numpy"]
    add(("rng", "numpy"), ("bad", [1], [numpy[0], torch.zeros(3, dtype=torch.long), *numpy[2:]]), delete=False)
    add(("rng", "cuda"), ("bad", 1), delete=False)
    cases.append(("set", ("rng", "cuda"), [u8.float()], "rng.cuda[0]"))
    add(("config_yaml",), (7, None, "a: [", "- a list", "a: &x [1]\nb: *x", "a: " + "[" * 100 + "]" * 100))
    marker = ckpt_mod.MARKER
    for v in ("1", None, True, 0, 1.5):
        cases.append(("set", (marker,), v, marker))
    cases.append(("set", (marker,), 2, "checkpoint format 2"))
    cases.append(("del", (marker,), None, "is not an mtl_cli checkpoint"))
    out = []
    for op, path, v, expect in cases:
        if expect is None:
            expect = path[0]
            for k in path[1:]:
                expect = key_path(expect, k)
        out.append((op, path, v, expect))
    return out


def _mutate(state: dict, op: str, path: tuple, value) -> dict:
    s = copy.deepcopy(state)
    parent = _at(s, path)
    if op == "del":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return s


def test_fuzz_every_damaged_or_crafted_file_is_a_checkpoint_error(done, tmp_path):
    """Over 2,000 seeded cases: whatever the file holds, load_checkpoint either raises
    CheckpointError or (a byte flip in zip metadata that no reader uses) returns exactly the
    original content; nothing else escapes. A loadable but wrong dict names its bad key."""
    rnd = random.Random(12)
    good_path = done / "checkpoints" / "last.pt"
    good = good_path.read_bytes()
    original = torch.load(good_path, weights_only=True)
    load_checkpoint(good_path)  # the real one is accepted
    f = tmp_path / "case.pt"
    stats: dict[str, dict[str, int]] = {}

    def check(family: str, path: Path = f, expect: str | None = None) -> None:
        got = stats.setdefault(family, {"cases": 0, "CheckpointError": 0, "loaded, same content": 0})
        got["cases"] += 1
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            got["CheckpointError"] += 1
            text = e.problems[0].message
            assert "Traceback" not in text and str(path) in text, text
            if expect is not None:
                assert expect in text, f"{family}: {expect!r} not in {text!r}"
            return
        # anything else than CheckpointError propagates and fails the test
        assert family == "byte flips" and same(state, original), f"{family}: a wrong file loaded"
        got["loaded, same content"] += 1

    for i in range(700):  # random bytes, some dressed as a zip or a pickle
        head = (b"", b"PK\x03\x04", b"\x80\x02")[i % 3]
        f.write_bytes(head + rnd.randbytes(rnd.randrange(0, 4096)))
        check("random bytes")
    for _ in range(500):
        f.write_bytes(good[: rnd.randrange(0, len(good))])
        check("truncations")
    for _ in range(600):
        b = bytearray(good)
        for _ in range(rnd.choice((1, 1, 2, 3))):
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        f.write_bytes(bytes(b))
        check("byte flips")
    for op, path, value, expect in _structural_cases(original):
        torch.save(_mutate(original, op, path, value), f)
        check("structurally wrong", expect=f": {expect} " if not expect.startswith(("is ", "checkpoint")) else expect)
    torch.save([original], f)
    check("structurally wrong", expect="is not an mtl_cli checkpoint")

    # odd files: empty, text, links, a folder, a pipe, a device, other torch and zip files
    special = tmp_path / "special"
    special.mkdir()
    (special / "empty.pt").write_bytes(b"")
    (special / "text.pt").write_text("not a checkpoint\n")
    (special / "link_to_text.pt").symlink_to(special / "text.pt")
    (special / "folder.pt").mkdir()
    (special / "link_to_folder.pt").symlink_to(special / "folder.pt")
    (special / "dangling.pt").symlink_to(special / "gone.pt")
    os.mkfifo(special / "pipe.pt")  # never opened: reading it would block
    (special / "device.pt").symlink_to("/dev/null")
    torch.save({"w": torch.zeros(2)}, special / "foreign.pt")
    torch.save(original, special / "legacy.pt", _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(special / "zip.pt", "w") as z:
        z.writestr("hello.txt", "hello")
    with zipfile.ZipFile(good_path) as src, zipfile.ZipFile(special / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():  # the real records, compressed: torch never writes that (a bomb could hide there)
            z.writestr(info.filename, src.read(info))
    buf = io.BytesIO()
    torch.save(original, buf)
    (special / "prefixed.pt").write_bytes(b"junk" + buf.getvalue()[:-10])
    for p in sorted(special.iterdir()):
        check("odd files", p)
    check("odd files", special / "missing.pt")

    print("\nload_checkpoint fuzz:", stats)
    total = sum(s["cases"] for s in stats.values())
    assert total >= 2000
    for family, s in stats.items():
        if family != "byte flips":
            assert s["CheckpointError"] == s["cases"], (family, s)
    flips = stats["byte flips"]
    assert flips["CheckpointError"] + flips["loaded, same content"] == flips["cases"]
    assert flips["CheckpointError"] > 0.9 * flips["cases"]  # the CRC-32 check catches changed content


def test_a_zero_byte_last_pt_is_a_checkpoint_error_through_the_cli(tmp_path, capsys):
    """Before, the error message's own code raised IndexError on the empty file."""
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    code, err = _exit(BASE + [f"run_dir={tmp_path / 'run'}", "resume=auto"], capsys)
    assert code == 2 and "Checkpoint error" in err and str(last) in err and "(0 bytes)" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- item 8: a full disk
class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            self.f.write(bytes(b[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def test_torch_reports_a_full_disk_as_runtime_error():
    """The premise: past its first bytes torch's stream writer turns ENOSPC into RuntimeError."""
    with pytest.raises(RuntimeError):
        torch.save({"a": torch.zeros(3000)}, FullDisk(io.BytesIO(), 4096))


@pytest.mark.parametrize("room", [10, 4096], ids=["OSError", "torch RuntimeError"])
def test_a_full_disk_while_writing_a_checkpoint_is_an_output_error(monkeypatch, tmp_path, room):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"step": 1, "w": torch.zeros(3000)}, path)
    before = path.read_bytes()
    real_save = torch.save
    monkeypatch.setattr(ckpt_mod.torch, "save", lambda obj, f: real_save(obj, FullDisk(f, room)))
    with pytest.raises(OutputError) as e:
        save_checkpoint({"step": 2, "w": torch.ones(3000)}, path)
    text = str(e.value)
    assert e.value.exit_code == 2 and str(path) in text and "free disk space" in text and "run_dir" in text
    assert not path.with_name("last.pt.tmp").exists()
    assert path.read_bytes() == before


def test_another_runtime_error_is_not_disguised_as_a_full_disk(monkeypatch, tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def broken(obj, f):
        f.write(b"partial")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken)
    with pytest.raises(RuntimeError, match="CUDA error"):
        save_checkpoint({"step": 2}, path)
    assert not path.with_name("last.pt.tmp").exists() and path.read_bytes() == before


def test_a_full_disk_during_a_run_exits_2_naming_the_file(monkeypatch, tmp_path, capsys):
    """Through the CLI, torch's own RuntimeError (before: exit 1 with its traceback)."""
    real_save = torch.save
    writes = {"n": 0}

    def save(obj, f):
        writes["n"] += f.name.endswith("last.pt.tmp")
        return real_save(obj, FullDisk(f, 4096) if writes["n"] == 2 else f)  # the second last.pt

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    run = tmp_path / "run"
    code, err = _exit(BASE + [f"run_dir={run}", "trainer.save_top_k=0"], capsys)
    last = run / "checkpoints" / "last.pt"
    assert code == 2 and "Output error" in err and str(last) in err and "free disk space" in err, err
    assert "Traceback" not in err
    assert not list((run / "checkpoints").glob("*.tmp"))
    assert torch.load(last, weights_only=True)["step"] == 2  # the first epoch's last.pt is whole
