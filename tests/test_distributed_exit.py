"""How a process that joined a process group ends (train/distributed.py ``leaving_cleanly``):
with its body's exit status, after the exit hooks and a flush, past the interpreter's finalisation.
Run in subprocesses (the helper ends its process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import atexit, logging, sys
from mtl_cli.train import distributed
distributed._JOINED = {joined}
atexit.register(lambda: print("hook ran", flush=True))
logging.basicConfig(stream=sys.stderr)
with distributed.leaving_cleanly():
    print("body", end="")  # unflushed: the helper flushes it
    logging.getLogger("x").warning("logged")
    {body}
print("after the body")
"""


def run(body: str, joined: bool) -> subprocess.CompletedProcess:
    code = textwrap.dedent(SCRIPT).format(joined=joined, body=body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "body, status",
    [("raise SystemExit(2)", 2), ("pass", 0), ("raise SystemExit('no')", 1)],
)
def test_a_joined_process_ends_with_the_body_status_after_its_hooks(body, status):
    done = run(body, joined=True)
    assert done.returncode == status, done.stderr
    assert done.stdout == "bodyhook ran\n"  # the hook ran, nothing after the body did
    assert "logged" in done.stderr
    assert ("no\n" in done.stderr) == (status == 1)


def test_an_unexpected_error_in_a_joined_process_is_printed_and_exits_1():
    done = run("raise KeyError('boom')", joined=True)
    assert done.returncode == 1
    assert "KeyError: 'boom'" in done.stderr and done.stdout == "bodyhook ran\n"


def test_a_process_that_never_joined_leaves_as_usual():
    ok = run("pass", joined=False)
    assert ok.returncode == 0 and ok.stdout == "bodyafter the body\nhook ran\n"
    failed = run("raise SystemExit(3)", joined=False)
    assert failed.returncode == 3 and failed.stdout == "bodyhook ran\n"


@pytest.mark.parametrize("module", ["mtl_cli.cli.train", "mtl_cli.cli.evaluate", "mtl_cli.cli.predict"])
def test_every_entry_point_that_can_join_a_group_runs_inside_leaving_cleanly(module, monkeypatch, capsys):
    """mtl-predict under torchrun once aborted at exit (SIGABRT) because it alone did not end
    through ``leaving_cleanly``: every entry point that can join a process group must."""
    import contextlib
    import importlib

    from mtl_cli.train import distributed

    entered = []

    @contextlib.contextmanager
    def recording():
        entered.append(module)
        yield

    monkeypatch.setattr(distributed, "leaving_cleanly", recording)
    try:
        importlib.import_module(module).main(["--version"] if module.endswith("train") else ["--help"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert entered == [module]
    assert "mtl-" in capsys.readouterr().out  # the usage or version text was printed
