"""A config's ``_target_`` names a callable only from an allowed module prefix, checked before
anything is imported: a run directory's saved config must not be able to run arbitrary code.

``mtl_cli.cli.train.main`` runs in-process as in test_bad_config.py; the Hydra run is replaced by
a stand-in, so nothing trains.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import mtl_cli.cli.train as cli
from mtl_cli import build
from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV
from mtl_cli.config.targets import DEFAULT_PREFIXES, import_target, is_allowed
from mtl_cli.errors import ConfigError
from mtl_cli.validation import Plan, validate

EVIL = "evil_mod_xyz"  # creates a marker file when imported: it must never be
GOOD = "my_opts_xyz"  # harmless: an SGD subclass


@pytest.fixture(autouse=True)
def _no_run(monkeypatch, tmp_path):
    """Plain environment; a command line that passes the checks fails the test instead of training."""
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def _hydra_task():
        pytest.fail("the checks accepted a forbidden _target_; Hydra would have started the run")

    monkeypatch.setattr(cli, "_hydra_task", _hydra_task)


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """``evil_mod_xyz`` (marks its import in a file) and ``my_opts_xyz`` on sys.path; both are
    dropped from sys.modules afterwards. Returns the marker file's path."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    marker = tmp_path / "evil_was_imported"
    (mod_dir / f"{EVIL}.py").write_text(
        textwrap.dedent(f"""\
        import pathlib
        pathlib.Path({str(marker)!r}).write_text("imported")


        class Opt:
            def __init__(self, params, lr=0.1):
                pass
        """)
    )
    (mod_dir / f"{GOOD}.py").write_text(
        textwrap.dedent("""\
        import os

        import torch

        system = os.system  # a re-export: defined in posix/nt, not here


        class SGD(torch.optim.SGD):
            pass
        """)
    )
    monkeypatch.syspath_prepend(str(mod_dir))
    yield marker
    for name in (EVIL, GOOD):
        sys.modules.pop(name, None)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out = capsys.readouterr()
    assert out.out == "", "errors go to stderr"
    return exc.value.code, out.err


# --- is_allowed -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "torch.optim",
        "torch.optim.AdamW",
        "torch.optim.lr_scheduler.StepLR",
        "torchvision",
        "torchvision.models.resnet18",
        "mtl_cli",
        "mtl_cli.build.x",
    ],
)
def test_default_prefixes_allow(path):
    assert is_allowed(path)


@pytest.mark.parametrize(
    "path",
    [
        "torch.optimx.Adam",  # a prefix matches at a dot only
        "torch.optimx",
        "mtl_clix.Thing",
        "torchvisionx.models",
        "torch",  # narrower than all of torch, on purpose
        "torch.load",
        "torch.hub.load",
        "torch.utils.cpp_extension.load",
        "os.system",
        "subprocess.call",
        "builtins.eval",
        "eval",
        "optim.torch",
    ],
)
def test_default_prefixes_refuse(path):
    assert not is_allowed(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        ".",
        "..",
        "torch.optim..AdamW",
        ".torch.optim.AdamW",
        "torch.optim.AdamW.",
        "torch..optim",
        "torch.optim. AdamW",
        "torch.optim.Adam W",
        " torch.optim.AdamW",
        "torch.optim.AdamW\n",
        "torch.optim.1Adam",
        "torch.optim.class",
        "torch/optim.AdamW",
        "torch.optim.AdamW()",
        "torch.optim.Adam;import os",
        "torch.optim:AdamW",
        "torch.optim.*",
        None,
        5,
        ["torch.optim.AdamW"],
    ],
)
def test_malformed_paths_are_refused(path):
    assert not is_allowed(path)
    assert not is_allowed(path, extra=["torch", "os", "a"])


def test_extra_prefixes():
    assert DEFAULT_PREFIXES == ("torch.optim", "torchvision", "mtl_cli")
    assert is_allowed("mypkg.optim", ["mypkg.optim"])
    assert is_allowed("mypkg.optim.Lion", ["mypkg.optim"])
    assert is_allowed("mypkg.optim.sub.Lion", ("other", "mypkg.optim"))
    assert is_allowed("mypkg.optim.Lion", "mypkg")  # one prefix as a plain string
    assert not is_allowed("mypkg.optimx.Lion", ["mypkg.optim"])
    assert not is_allowed("mypkg.Lion", ["mypkg.optim"])
    assert not is_allowed("mypkg.optim.Lion", None)
    assert is_allowed("torch.optim.SGD", None)  # the defaults stay in force


@pytest.mark.parametrize("bad", ["", ".", "..", "os.", ".os", "o s", "os..path"])
def test_malformed_extra_prefixes_allow_nothing(bad):
    for path in ("os.system", "os.path.join", "subprocess.call", "x.y"):
        assert not is_allowed(path, [bad])


# --- import_target --------------------------------------------------------------------------


def test_import_target_refuses_without_importing(modules):
    with pytest.raises(ConfigError) as err:
        import_target(f"{EVIL}.Opt", key="optimizer._target_")
    (problem,) = err.value.problems
    assert problem.key == "optimizer._target_"
    assert problem.value == f"{EVIL}.Opt"
    assert problem.allowed == "torch.optim, torchvision, mtl_cli"
    assert f"+allowed_targets=[{EVIL}]" in problem.fix
    assert not modules.exists()
    assert EVIL not in sys.modules


def test_import_target_lists_the_extra_prefixes_in_force():
    with pytest.raises(ConfigError) as err:
        import_target("os.system", ["mypkg.optim", "bad..prefix"], key="scheduler._target_")
    (problem,) = err.value.problems
    assert problem.key == "scheduler._target_"
    assert problem.allowed == "torch.optim, torchvision, mtl_cli, mypkg.optim"
    assert "+allowed_targets=[os]" in problem.fix


def test_import_target_imports_allowed_paths(modules):
    assert import_target("torch.optim.AdamW") is torch.optim.AdamW
    assert import_target("torch.optim.lr_scheduler.StepLR") is torch.optim.lr_scheduler.StepLR
    cls = import_target(f"{GOOD}.SGD", [GOOD])
    assert issubclass(cls, torch.optim.SGD)
    with pytest.raises(AttributeError):  # allowed but missing: the import's own error
        import_target("torch.optim.Nope")
    with pytest.raises(ImportError):
        import_target("mtl_cli.nope_module.Thing")


def test_import_target_refuses_a_reexport_from_outside(modules):
    """An allowed module cannot pass on a callable it imported from elsewhere (os.system here)."""
    with pytest.raises(ConfigError) as err:
        import_target(f"{GOOD}.system", [GOOD], key="optimizer._target_")
    (problem,) = err.value.problems
    assert problem.key == "optimizer._target_" and problem.value == f"{GOOD}.system"
    assert "defined outside the allowed modules" in problem.message


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,key,path",
    [
        (["optimizer._target_=os.system"], "optimizer._target_", "os.system"),
        (["scheduler._target_=subprocess.call"], "scheduler._target_", "subprocess.call"),
        (["optimizer._target_=torch.hub.load"], "optimizer._target_", "torch.hub.load"),
        (["optimizer._target_=torch.load"], "optimizer._target_", "torch.load"),
        (["optimizer._target_=builtins.eval"], "optimizer._target_", "builtins.eval"),
        (["optimizer._target_=torch.optimx.Adam"], "optimizer._target_", "torch.optimx.Adam"),
        (["scheduler=step", "scheduler._target_=torch.hub.load"], "scheduler._target_", "torch.hub.load"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_cli_refuses_forbidden_target(argv, key, path, capsys):
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert err.startswith("Config error: 1 problem found"), err
    assert "Traceback" not in err
    for w in (
        f"{key}: not an allowed target",
        repr(path),
        "allowed: torch.optim, torchvision, mtl_cli",
        "+allowed_targets=[",
    ):
        assert w in err, f"{w!r} not in:\n{err}"


def test_cli_refuses_in_every_sweep_job(capsys):
    code, err = _run(["-m", "optimizer._target_=torch.optim.SGD,os.system"], capsys)
    assert code == 2
    assert "optimizer._target_" in err and "'os.system'" in err and "allowed_targets" in err


def test_cli_never_imports_a_forbidden_module(modules, capsys):
    code, err = _run([f"optimizer._target_={EVIL}.Opt"], capsys)
    assert code == 2
    assert "optimizer._target_" in err and f"'{EVIL}.Opt'" in err and f"+allowed_targets=[{EVIL}]" in err
    assert not modules.exists(), "the module was imported (and ran)"
    assert EVIL not in sys.modules


def test_cli_accepts_an_allowed_module(modules, monkeypatch):
    called = []
    monkeypatch.setattr(cli, "_hydra_task", lambda: called.append(True))
    monkeypatch.setattr(cli.sys, "argv", ["mtl-train"])
    cli.main([f"optimizer._target_={GOOD}.SGD", f"+allowed_targets=[{GOOD}]", "debug=smoke"])
    assert called == [True]
    assert not modules.exists() and EVIL not in sys.modules


def test_validate_accepts_an_allowed_module(modules):
    for allow in (f"+allowed_targets=[{GOOD}]", f"allowed_targets=[{GOOD}]", f"allowed_targets=[other,{GOOD}]"):
        plan = validate(compose([f"optimizer._target_={GOOD}.SGD", allow]))
        assert plan.cfg["optimizer"]["_target_"] == f"{GOOD}.SGD"
        assert GOOD in plan.cfg["allowed_targets"]


def test_validate_refuses_it_without_allowed_targets(modules):
    sys.modules.pop(GOOD, None)
    with pytest.raises(ConfigError) as err:
        validate(compose([f"optimizer._target_={GOOD}.SGD"]))
    assert [q.key for q in err.value.problems] == ["optimizer._target_"]
    assert GOOD not in sys.modules


def test_allowing_one_module_does_not_allow_another(modules):
    with pytest.raises(ConfigError) as err:
        validate(compose([f"optimizer._target_={EVIL}.Opt", f"+allowed_targets=[{GOOD}]"]))
    (problem,) = err.value.problems
    assert problem.key == "optimizer._target_"
    assert GOOD in problem.allowed
    assert not modules.exists() and EVIL not in sys.modules


def test_allowed_target_that_does_not_exist_still_cannot_import(capsys):
    code, err = _run(["optimizer._target_=mypkg_nope_xyz.Opt", "+allowed_targets=[mypkg_nope_xyz]"], capsys)
    assert code == 2
    assert "optimizer._target_: cannot import" in err and "'mypkg_nope_xyz.Opt'" in err


@pytest.mark.parametrize(
    "entry,shown",
    [("os..path", "'os..path'"), (".mypkg", "'.mypkg'"), ("'my pkg'", "'my pkg'"), ("mypkg.", "'mypkg.'")],
)
def test_malformed_allowed_targets_entry(entry, shown, capsys):
    code, err = _run([f"+allowed_targets=[torch.optim,{entry}]"], capsys)
    assert code == 2, err
    assert "1 problem found" in err
    for w in ("allowed_targets[1]: not a dotted module path", shown, "fix: ", "+allowed_targets=[mypkg.optim]"):
        assert w in err, f"{w!r} not in:\n{err}"


def test_allowed_targets_of_the_wrong_type(capsys):
    code, err = _run(["allowed_targets=[1]"], capsys)
    assert code == 2
    assert "allowed_targets: wrong type" in err and "list of string or null" in err


# --- build (a Plan need not come from validate) -------------------------------------------


def _plan(**cfg) -> Plan:
    return Plan(cfg=cfg, source=None, spec=None)


@pytest.mark.parametrize("path", ["os.system", "torch.hub.load", "builtins.eval", "torch.optimx.Adam", "a..b"])
def test_build_import_refuses_forbidden_paths(path):
    with pytest.raises(ConfigError) as err:
        build._import(_plan(allowed_targets=None), path, "optimizer")
    (problem,) = err.value.problems
    assert problem.key == "optimizer._target_" and problem.value == path


def test_build_import_uses_the_plans_allowed_targets(modules):
    assert build._import(_plan(), "torch.optim.SGD", "optimizer") is torch.optim.SGD
    with pytest.raises(ConfigError):
        build._import(_plan(allowed_targets=[]), f"{EVIL}.Opt", "optimizer")
    assert not modules.exists() and EVIL not in sys.modules
    cls = build._import(_plan(allowed_targets=[GOOD]), f"{GOOD}.SGD", "optimizer")
    assert issubclass(cls, torch.optim.SGD)


def test_build_optimizer_and_scheduler_refuse_forbidden_targets(modules):
    model, weighting = torch.nn.Linear(2, 1), torch.nn.Module()
    with pytest.raises(ConfigError) as err:
        build.build_optimizer(_plan(optimizer={"_target_": f"{EVIL}.Opt", "lr": 0.1}), model, weighting)
    assert err.value.problems[0].key == "optimizer._target_"
    assert not modules.exists() and EVIL not in sys.modules
    opt = build.build_optimizer(_plan(optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}), model, weighting)
    with pytest.raises(ConfigError) as err:
        build.build_scheduler(_plan(scheduler={"_target_": "subprocess.call"}), opt, 10)
    assert err.value.problems[0].key == "scheduler._target_"
    sched, interval = build.build_scheduler(
        _plan(scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1}), opt, 10
    )
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and interval == "step"
