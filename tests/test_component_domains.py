"""Every key of every registered component is bound at validation (issue 11).

For each registry (weightings, architectures, backbones, heads, data sources, task kinds) and
each config key of each registered component, read from the registries when the tests are
collected, a value outside the key's declared domain (derived from its annotation: outside a
``Range``, not in a ``Literal``, an empty list under ``Len(min=1)``, a list or mapping with a bad
item, a value of the wrong type where any value of the type is allowed) must end ``mtl-train`` with
exit code 2, the full dotted key named, no traceback, and nothing written (no ``outputs``
directory). A meta-test requires every key to declare its domain, so that a new key without one
fails here.

``mtl_cli.cli.train.main`` runs in-process, as in ``test_bad_config.py``; the Hydra run itself is
replaced by a function that fails the test. Composing a config costs about 0.2 s, so the keys of
one component get their bad values on one command line (one run per component, one test case per
key), and each key must be reported with its own bad value ``(got ...)``.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pytest
import yaml

import mtl_cli.cli.train as cli
from mtl_cli.config.locate import ENV
from mtl_cli.config.params import Check, Domain, Len, Range, Text
from mtl_cli.config.typecheck import config_params
from mtl_cli.data.sources.shapes import ShapesSource
from mtl_cli.registry import ARCHS, BACKBONES, HEADS, SOURCES, TASK_KINDS, WEIGHTINGS, Registry

CONF = Path(__file__).resolve().parents[1] / "conf"

#: config group -> the registry its nodes name (``head`` options hold one node per slot)
GROUPS: dict[str, Registry] = {
    "backbone": BACKBONES,
    "head": HEADS,
    "arch": ARCHS,
    "weighting": WEIGHTINGS,
    "data": SOURCES,
}

#: data for a backbone that cannot read the default data's images (a key's own problem is reported
#: whatever the data, but then it is the only one)
DATA_FOR_MODALITY = {"signal": ["experiment=tones"]}


# ---------------------------------------------------------------------------------------------
# annotations


def _split(tp: Any) -> tuple[Any, list[Domain]]:
    """``Annotated[T, d...]`` -> ``(T, [d...])``."""
    if typing.get_origin(tp) is Annotated:
        base, *extra = typing.get_args(tp)
        return base, [d for d in extra if isinstance(d, Domain)]
    return tp, []


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple, typing.Sequence) or tp in (list, tuple)


def _is_dict(tp: Any) -> bool:
    return typing.get_origin(tp) is dict or tp is dict


def _items(tp: Any) -> list[Any]:
    return [a for a in typing.get_args(tp) if a is not Ellipsis]


def undeclared(tp: Any, where: str = "") -> list[str]:
    """Parts of an annotation whose allowed values are not declared (empty: all declared).

    Numbers need a ``Range`` (or a ``Literal``), strings a ``Literal``, ``Check`` or ``Text``;
    lists and mappings need declared items; ``true``/``false`` and ``null`` need nothing. A plain
    ``dict`` is a nested component node (``{name: ..., keys}``), which the owner's ``check``
    checks against its own registry.
    """
    base, doms = _split(tp)
    if base is type(None) or base is bool or typing.get_origin(base) is Literal:
        return []
    if _is_union(base):
        return [r for a in typing.get_args(base) for r in undeclared(a, where)]
    if base in (int, float):
        return [] if any(isinstance(d, Range) for d in doms) else [f"{where}: a number without a Range"]
    if base is str:
        ok = any(isinstance(d, (Check, Text)) for d in doms)
        return [] if ok else [f"{where}: a string without a Literal, Check or Text"]
    if _is_list(base):
        args = _items(base)
        return undeclared(args[0], f"{where}[item]") if args else [f"{where}: a list of anything"]
    if base is dict:
        return []  # a nested component node
    if _is_dict(base):
        return undeclared(typing.get_args(base)[1], f"{where}[value]")
    return [f"{where}: no declared domain ({base!r})"]


def _range_violation(r: Range, base: Any) -> float:
    if r.ge is not None:
        v = r.ge - 1
    elif r.gt is not None:
        v = r.gt
    elif r.le is not None:
        v = r.le + 1
    else:
        v = r.lt
    return int(v) if base is int and float(v).is_integer() else float(v)


#: values to try against a Check, by type
_CANDIDATES = {str: ["__not_allowed__", "", "x.pt"], int: [0, -1, 2, 1, 3, 10**9], float: [-1.0, 0.0, 2.0, 0.5]}
#: a value of another type, for keys that take any value of their type
_WRONG_TYPE = {bool: "maybe", str: 5, int: "five", float: "five", dict: 5}


def bad_value(tp: Any) -> Any:
    """A value the annotation refuses, derived from its declared domain."""
    base, doms = _split(tp)
    if _is_union(base):
        members = [a for a in typing.get_args(base) if a is not type(None)]
        return bad_value(members[0])
    for d in doms:
        if isinstance(d, Range):
            return _range_violation(d, base)
        if isinstance(d, Len) and d.min:
            return []
        if isinstance(d, Check):
            kind = base if base in _CANDIDATES else typing.get_origin(base)
            for v in _CANDIDATES.get(kind, [[]]):
                if not d.ok(v):
                    return v
            raise AssertionError(f"no value of {base!r} fails {d}")
    if typing.get_origin(base) is Literal:
        allowed = typing.get_args(base)
        if all(isinstance(a, str) for a in allowed):
            return "__not_allowed__"
        return max(a for a in allowed if isinstance(a, (int, float))) + 1
    if _is_list(base) and _items(base):
        return [bad_value(_items(base)[0])]
    if _is_dict(base) and typing.get_args(base):
        return {"k": bad_value(typing.get_args(base)[1])}
    for t, wrong in _WRONG_TYPE.items():
        if base is t or (t is dict and _is_dict(base)):
            return wrong
    raise AssertionError(f"no bad value for {tp!r}")


def hydra_value(v: Any) -> str:
    """``v`` in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"


# ---------------------------------------------------------------------------------------------
# which command line selects a component


def _option(group: str, name: str) -> tuple[str, str]:
    """A conf option of ``group`` whose YAML names ``name``, and the node's key: the top level
    (``backbone``) or, for a group of slots (``head``), the slot (``head.vector``). An option
    named like the component comes first."""
    found = []
    for path in sorted((CONF / group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        if node.get("name") == name:
            found.append((path.stem != name, 0, path.stem, group))
        elif "name" not in node:
            for slot, sub in node.items():
                if isinstance(sub, dict) and sub.get("name") == name:
                    found.append((path.stem != name, 1, path.stem, f"{group}.{slot}"))
    assert found, f"no conf/{group}/*.yaml has name: {name}; add one (every component has a YAML)"
    _, _, option, where = min(found)
    return option, where


def _needs(group: str, name: str) -> list[str]:
    """What else the component needs to be checked on: data it can read."""
    if group == "backbone":
        modalities = BACKBONES.get(name).modalities
        if "image" not in modalities:
            return DATA_FOR_MODALITY.get(modalities[0], [])
    return []


def _cases() -> list:
    """One case per key of every registered component: (run, argv, key, its bad value). The keys
    of one component are set to their bad values on one command line (one CLI run serves them
    all: composing the config is what costs time); each key must be refused for its own value."""
    out = []
    for group, registry in GROUPS.items():
        for name in registry.names():
            option, where = _option(group, name)
            params = config_params(registry.get(name))
            bad = {key: bad_value(tp) for key, (tp, _) in params.items()}
            argv = [f"{group}={option}", *_needs(group, name)]
            argv += [f"++{where}.{key}={hydra_value(v)}" for key, v in bad.items()]
            run = f"{registry.kind}:{name}"
            out += [pytest.param(run, argv, f"{where}.{k}", v, id=f"{run}:{k}") for k, v in bad.items()]
    return out


CASES = _cases()


def _kind_cases() -> list:
    """A task of each kind on a target of the default shapes data that it can learn, with a bad
    loss and a bad metric."""
    targets = ShapesSource().describe().targets
    out = []
    for kind in TASK_KINDS.names():
        accepts = TASK_KINDS.get(kind).accepts
        target = next(t for t, ts in targets.items() if ts.kind in accepts)
        bad = {"loss": "__not_allowed__", "metrics": ["__not_allowed__"]}
        argv = ["tasks=none", f"+tasks.{target}.kind={kind}"]
        argv += [f"+tasks.{target}.{key}={hydra_value(v)}" for key, v in bad.items()]
        run = f"task kind:{kind}"
        refused = {"loss": "__not_allowed__", "metrics": "__not_allowed__"}  # (a metric is refused one by one)
        out += [pytest.param(run, argv, f"tasks.{target}.{k}", refused[k], id=f"{run}:{k}") for k in bad]
    return out


KIND_CASES = _kind_cases()


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(autouse=True)
def _no_run(monkeypatch, tmp_path):
    """Plain environment; a command line that passes the checks fails the test instead of training."""
    for var in ("MTL_DEBUG", "HYDRA_FULL_ERROR", ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def _hydra_task():
        pytest.fail("the checks accepted bad values; Hydra would have started the run")

    monkeypatch.setattr(cli, "_hydra_task", _hydra_task)


_RUNS: dict[str, tuple[object, str, list[str]]] = {}  # run -> (exit code, stderr, files left in its cwd)


def _run(run: str, argv: list[str], capsys, tmp_path_factory) -> tuple[object, str, list[str]]:
    """``mtl-train argv`` in-process, in an empty directory of its own; once per run."""
    if run not in _RUNS:
        cwd = tmp_path_factory.mktemp("run")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(cwd)
            with pytest.raises(SystemExit) as exc:
                cli.main(argv)
        _RUNS[run] = (exc.value.code, capsys.readouterr().err, sorted(p.name for p in cwd.iterdir()))
    return _RUNS[run]


def _refused(run, argv, key, value, capsys, tmp_path_factory) -> None:
    code, err, files = _run(run, argv, capsys, tmp_path_factory)
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"  - {key}: ")]
    assert lines, f"{key} is not named in:\n{err}"
    if not isinstance(value, dict):  # (a mapping is merged with the option's own entries)
        assert any(f"(got {value!r})" in line for line in lines), f"{key}={value!r} is not the value refused:\n{err}"
    assert "outputs" not in files, "a run directory was written"
    assert files == [], f"validation created files: {files}"


@pytest.mark.parametrize("run,argv,key,value", CASES)
def test_a_bad_value_of_every_key_is_refused_at_validation(run, argv, key, value, capsys, tmp_path_factory):
    _refused(run, argv, key, value, capsys, tmp_path_factory)


@pytest.mark.parametrize("run,argv,key,value", KIND_CASES)
def test_a_bad_loss_or_metric_of_every_task_kind_is_refused_at_validation(
    run, argv, key, value, capsys, tmp_path_factory
):
    _refused(run, argv, key, value, capsys, tmp_path_factory)


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_key_declares_its_domain(group):
    registry = GROUPS[group]
    missing = []
    for name in registry.names():
        for key, (tp, _) in config_params(registry.get(name)).items():
            if tp is Any or tp is inspect.Parameter.empty:
                missing.append(f"{name}.{key}: no annotation")
            missing += [f"{name}.{key}{r}" for r in undeclared(tp)]
    assert not missing, f"{registry.kind} keys without a declared domain:\n" + "\n".join(missing)


def test_every_registry_and_component_is_covered():
    """The cases come from the registries: every component with keys has one case per key, and
    every task kind two."""
    for group, registry in GROUPS.items():
        for name in registry.names():
            keys = {f"{k}" for k in config_params(registry.get(name))}
            ids = {c.id.rsplit(":", 1)[1] for c in CASES if c.values[0] == f"{registry.kind}:{name}"}
            assert ids == keys, (group, name)
    assert len(KIND_CASES) == 2 * len(TASK_KINDS.names())


def test_bad_values_are_derived_from_the_annotation():
    from mtl_cli.config.params import Dropout, PosInt

    assert bad_value(Dropout) == -1.0
    assert bad_value(PosInt) == 0
    assert bad_value(Annotated[float, Range(gt=0, le=1)]) == 0.0
    assert bad_value(Annotated[list[PosInt], Len(min=1)]) == []
    assert bad_value(list[PosInt] | None) == [0]
    assert bad_value(dict[str, Annotated[float, Range(ge=0, le=1)]] | None) == {"k": -1.0}
    assert bad_value(Literal["a", "b"]) == "__not_allowed__"
    assert bad_value(Literal[1, 3]) == 4
    assert bad_value(Annotated[str, Text("a path")] | None) == 5
    assert bad_value(Annotated[str, Check(lambda s: len(s) == 1, "one character")]) == "__not_allowed__"
    assert bad_value(bool) == "maybe"
    assert undeclared(int) and undeclared(str) and undeclared(list[int]) and undeclared(dict[str, float])
    assert not undeclared(Annotated[list[PosInt], Len(min=1)] | None)
    assert hydra_value({"k": [1, "a'b"]}) == "{k:[1,'a\\'b']}"


# ---------------------------------------------------------------------------------------------
# rules between keys, or with the data, stay in the components' check classmethods


@pytest.mark.parametrize(
    "argv,key,words",
    [
        pytest.param(
            ["experiment=image_and_audio", "++arch.stems.signal.n_fft=4096"],
            "arch.stems.signal.n_fft",
            ["longer than the signal (2048 samples)", "at most 2048"],
            id="a stem's own rule, under the stem's key",
        ),
        pytest.param(
            ["experiment=image_and_audio", "arch.join=map"],
            "arch.join",
            ["one modality", "image, signal", "allowed: auto, vector"],
            id="join=map across modalities",
        ),
        pytest.param(
            ["arch=dselect_k", "arch.num_experts=2", "arch.k=3"],
            "arch.k",
            ["allowed: 1..2"],
            id="dselect_k k above num_experts",
        ),
    ],
)
def test_rules_between_keys_are_refused_at_validation(argv, key, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    assert f"  - {key}: " in err and all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_named_weights_must_be_weights_of_the_model():
    from mtl_cli.data.base import InputSpec

    cls = BACKBONES.get("torchvision")
    spec = InputSpec("image", (3, 32, 32))
    assert cls.check({"model": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}, spec) == []
    [p] = cls.check({"model": "resnet18", "weights": "ViT_B_16_Weights.IMAGENET1K_V1"}, spec)
    assert p.key == "backbone.weights" and "not weights of resnet18" in p.message and "IMAGENET1K_V1" in p.allowed


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_check_accepts_its_defaults(name):
    from mtl_cli.data.base import InputSpec

    cls = BACKBONES.get(name)
    shapes = {"image": (3, 32, 32), "signal": (1, 2048), "tabular": (7,)}
    for modality in cls.modalities:
        assert cls.check({"name": name}, InputSpec("x", shapes[modality], modality)) == []
