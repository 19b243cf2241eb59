"""Every option of every config group, and every experiment, composes like ``mtl-train`` would.

Options and experiments are discovered from the files in conf/, so a new option or experiment is
tested without new code. Shapes-based configs (no files needed) are validated and their resolved
tasks checked; configs that need local data must fail with a UserError naming what is missing.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mtl_cli.config.compose import compose
from mtl_cli.config.locate import ENV, builtin_config_dir, group_options
from mtl_cli.errors import UserError
from mtl_cli.registry import TASK_KINDS
from mtl_cli.validation import validate

CONF = builtin_config_dir()
SKIP_GROUPS = {"task", "hydra", "experiment"}  # task: fragments of task sets; experiments: tested below
# A task set only composes into something valid with the data it is made for.
TASKS_DATA = {
    "shapes": "shapes",
    "shapes_all": "shapes",
    "left_right": "multi_mnist",
    "celeba40": "celeba",
    "label": "mnist",
    "none": "shapes",
    "tones": "tones",
}
# task sets whose tasks read several datasets: they compose with the experiment that declares them
TASKS_EXPERIMENT = {"two_inputs": "two_inputs", "image_and_audio": "image_and_audio"}
# ... and the data with the task set made for it (file-based data fails on its missing files first)
DATA_TASKS = {
    "shapes": "shapes",
    "mnist": "label",
    "fashion_mnist": "label",
    "cifar10": "label",
    "cifar100": "label",
    "multi_mnist": "left_right",
    "multi_fashion": "left_right",
    "celeba": "celeba40",
    "csv": "none",
    "image_manifest": "none",
    "tones": "tones",
    "school": "each_regression",
    "mulan": "each_regression",
}
# options that compose but are rejected by validate() with the default tasks, and why
INVALID_WITH_DEFAULTS = {
    ("backbone", "mlp"): ["tasks.segmentation.head", "needs a spatial feature map"],
    ("backbone", "lenet"): ["tasks.segmentation.head", "needs a spatial feature map"],
    ("tasks", "none"): ["tasks", "no tasks are declared"],
    ("backbone", "signal_cnn"): ["backbone.name", "signal_cnn reads signal inputs", "image input"],
    ("data", "tones"): ["backbone.name", "small_cnn reads image inputs", "signal input", "allowed: mlp, signal_cnn"],
    ("tasks", "tones"): ["backbone.name", "small_cnn reads image inputs", "signal input"],
    # one regression task per target: the shapes data's classification targets refuse it
    ("tasks", "each_regression"): ["tasks.shape.kind", "a regression task cannot learn target 'shape'"],
}
DEFAULT_TASKS = {  # name: (kind, primary metric, num_classes from the shapes data)
    "shape": ("classification", "accuracy", 4),
    "size": ("regression", "mae", None),
    "present": ("multilabel", "f1", 4),
    "segmentation": ("segmentation", "miou", 5),
}
SHAPES_ALL_TASKS = DEFAULT_TASKS | {
    "color": ("classification", "accuracy", 6),
    "position": ("regression", "mae", None),
    "large": ("binary", "accuracy", None),
    "depth": ("dense_regression", "abs_err", None),
}


@functools.cache
def _compose_cached(overrides: frozenset[str]):
    return compose(sorted(overrides))


def _builtin_defaults() -> set[str]:
    """``group=option`` of every default choice in train.yaml."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"))["defaults"]
    return {f"{k}={v}" for d in defaults if isinstance(d, dict) for k, v in d.items() if v is not None}


def _compose(overrides: list[str]):
    """compose() once per set of group choices (composing is the slow part; validate copies).
    Choosing a group's default option composes the default config: it is composed once."""
    return _compose_cached(frozenset(overrides) - _builtin_defaults()).copy()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user config dirs; relative data roots (data/) resolve in an empty temporary directory."""
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.chdir(tmp_path)


def _groups() -> list[str]:
    return sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS)


def _group_cases() -> list:
    cases = []
    for group in _groups():
        for f in sorted((CONF / group).glob("*.yaml")):
            cases.append(pytest.param(group, f.stem, id=f"{group}={f.stem}"))
    return cases


def _experiments() -> list:
    return [pytest.param(f.stem, id=f.stem) for f in sorted((CONF / "experiment").glob("*.yaml"))]


def _own_values(path: Path) -> tuple[dict, bool]:
    """The values a config file sets itself (its defaults list removed) and whether it is global."""
    is_global = "@package _global_" in path.read_text()
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    node.pop("defaults", None)
    return node, is_global


def _assert_contains(composed, own, where: str) -> None:
    """Every leaf the file sets is in the composed config (a ??? leaf: unset or null there)."""
    for k, v in own.items():
        key = f"{where}.{k}" if where else str(k)
        assert k in composed, f"{key} missing from the composed config"
        if isinstance(v, dict) and v:
            _assert_contains(composed[k], v, key)
        elif v == "???":
            # OmegaConf keeps a value already set when ??? is merged onto it (see the report)
            assert composed[k] in ("???", None), key
        else:
            assert composed[k] == v, f"{key}: composed {composed[k]!r}, file says {v!r}"


def _declared_tasks(option: str) -> dict[str, str]:
    """name -> kind of a task set file, from its ``/task@<name>: <kind>`` defaults entries."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "tasks" / f"{option}.yaml")).get("defaults", [])
    return {k.split("@", 1)[1]: v for d in defaults if isinstance(d, dict) for k, v in d.items()}


def _overrides_for(group: str, option: str) -> list[str]:
    if group == "tasks" and option in TASKS_EXPERIMENT:
        return [f"experiment={TASKS_EXPERIMENT[option]}"]
    if group == "tasks":
        return [f"tasks={option}", f"data={TASKS_DATA.get(option, 'shapes')}"]
    if group == "data":
        return [f"data={option}", f"tasks={DATA_TASKS.get(option, 'none')}"]
    return [f"{group}={option}"]


def _missing_data_hint(cfg) -> str:
    """What an error about this config's missing local data must name."""
    data = cfg.data
    if "path" in data:  # csv, image_manifest: a file given by data.path
        return "data.path"
    return str((Path.cwd() / data.root).resolve())  # torchvision layouts: the (missing) root folder


def _check_tasks(plan, expected: dict) -> None:
    assert set(plan.tasks) == set(expected)
    for name, (kind, primary, num_classes) in expected.items():
        t = plan.tasks[name]
        assert t["kind"] == kind, name
        assert t["primary_metric"] == primary, name
        assert t["primary_metric"] in t["metrics"], name
        assert t["num_classes"] == num_classes, name
        assert t["target"] == name and t["input"] == "image", name
        assert t["role"] == "primary" and t["weight"] == 1.0, name
        assert set(t["directions"]) == set(t["metrics"]), name
        assert set(t["directions"].values()) <= {"higher", "lower"}, name
        slot = "dense" if kind in ("segmentation", "dense_regression") else "vector"
        assert t["head"] == plan.cfg["head"][slot], name  # the default head of its slot


def _check_needs_files(cfg) -> None:
    """Config for local data that is not there: validate() or load() raise a UserError naming it.

    When validate() passes, describe() needed no files: the tasks resolved (classes from the data).
    """
    hint = _missing_data_hint(cfg)
    with pytest.raises(UserError) as err:
        plan = validate(cfg)
        assert plan.tasks and set(plan.tasks) == {n for n in cfg.tasks if cfg.tasks[n].enabled}
        for name, t in plan.tasks.items():
            assert t["num_classes"] == plan.spec.targets[t["target"]].num_classes, name
            if t["kind"] == "classification":
                assert t["num_classes"] >= 2, name
        plan.source.load()
    assert hint in err.value.render(), err.value.render()
    assert err.value.exit_code == 2


def test_groups_are_discovered():
    groups = _groups()
    for g in (
        "arch",
        "backbone",
        "data",
        "debug",
        "head",
        "logger",
        "optimizer",
        "scheduler",
        "tasks",
        "trainer",
        "weighting",
    ):
        assert g in groups
    for g in groups:  # locate.group_options (used by the CLI) sees the same files
        assert group_options(g) == sorted(p.stem for p in (CONF / g).glob("*.yaml"))


def _skip_without_plugin(path: Path) -> None:
    """Options that select a Hydra plugin (hparams_search, launcher) compose only where it is installed."""
    from mtl_cli.cli.train import PLUGIN_USE, PLUGINS, installed

    for name in PLUGIN_USE.findall(path.read_text()):
        module, extra, what = PLUGINS[name]
        if not installed(module):
            pytest.skip(f'{path.parent.name}={path.stem} needs {what}: pip install "mtl-cli[{extra}]"')


@pytest.mark.parametrize("group,option", _group_cases())
def test_group_option_composes(group, option):
    _skip_without_plugin(CONF / group / f"{option}.yaml")
    cfg = _compose(_overrides_for(group, option))
    own, is_global = _own_values(CONF / group / f"{option}.yaml")
    if is_global:
        hydra_own = own.pop("hydra", None)
        _assert_contains(cfg, own, "")
        if hydra_own:  # compose() leaves Hydra's own node out: check it where Hydra keeps it (unresolved)
            hc = compose(_overrides_for(group, option), return_hydra_config=True).hydra
            _assert_contains(OmegaConf.to_container(hc, resolve=False), hydra_own, "hydra")
    elif group == "tasks":
        declared = _declared_tasks(option)
        assert set(cfg.tasks) == set(declared)
        for name, kind in declared.items():
            assert cfg.tasks[name].kind == kind
    else:
        _assert_contains(cfg[group], own, group)
    for key in ("data", "tasks", "backbone", "arch", "head", "weighting", "optimizer", "scheduler", "trainer"):
        assert key in cfg, key

    problem = INVALID_WITH_DEFAULTS.get((group, option))
    if problem is not None:
        with pytest.raises(UserError) as err:
            validate(cfg)
        for word in problem:
            assert word in err.value.render()
        return
    if group == "tasks" and option in TASKS_EXPERIMENT:
        plan = validate(cfg)  # generated data: valid as composed, every declared task resolved
        assert set(plan.tasks) == set(cfg.tasks)
        return
    if cfg.data.name != "shapes":
        _check_needs_files(cfg)
        return
    plan = validate(cfg)
    assert plan.spec is not None and "image" in plan.spec.inputs
    expected = SHAPES_ALL_TASKS if option == "shapes_all" else DEFAULT_TASKS
    _check_tasks(plan, expected)


@pytest.mark.parametrize("name", _experiments())
def test_experiment_composes(name):
    cfg = _compose([f"experiment={name}"])
    own, is_global = _own_values(CONF / "experiment" / f"{name}.yaml")
    assert is_global, "experiments are @package _global_"
    _assert_contains(cfg, own, "")
    # the defaults list overrides of the experiment took effect
    for d in OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml")).get("defaults", []):
        if isinstance(d, dict):
            ((k, v),) = d.items()
            group, _, package = k.split("/")[-1].partition("@")  # /data@datasets.audio: a group at a key
            own_group, _ = _own_values(CONF / group / f"{v}.yaml")
            if group == "tasks":
                continue  # task sets: checked through the resolved tasks or the data error below
            node, mine = cfg, own
            for part in (package or group).split("."):
                node, mine = node[part], mine.get(part, {})
            for leaf, value in own_group.items():
                if leaf not in mine and not isinstance(value, dict):
                    assert node[leaf] == value, f"{package or group}.{leaf}"

    if cfg.data.name not in ("shapes", "tones"):  # generated data needs no files
        _check_needs_files(cfg)
        return
    plan = validate(cfg)
    tasks = {n: t["kind"] for n, t in plan.tasks.items()}
    assert tasks == {n: cfg.tasks[n].kind for n in cfg.tasks if cfg.tasks[n].enabled}
    for t in plan.tasks.values():
        assert t["primary_metric"] in t["metrics"]
    if set(plan.tasks) in (set(SHAPES_ALL_TASKS), set(DEFAULT_TASKS)):
        _check_tasks(plan, SHAPES_ALL_TASKS if set(plan.tasks) == set(SHAPES_ALL_TASKS) else DEFAULT_TASKS)
    for t in plan.tasks.values():  # every task resolved against its own dataset
        assert plan.spec.targets[t["target_key"]].kind in TASK_KINDS.get(t["kind"]).accepts
        assert t["input_key"] in plan.spec.inputs


def test_default_config_plan():
    # choosing the default options composes the default config (as _compose assumes)
    assert OmegaConf.to_container(
        compose(["backbone=small_cnn", "optimizer=adamw", "tasks=shapes"])
    ) == OmegaConf.to_container(compose([]))
    plan = validate(_compose([]))
    _check_tasks(plan, DEFAULT_TASKS)
    assert plan.cfg["trainer"]["max_epochs"] == 10 and plan.cfg["trainer"]["batch_size"] == 64
    assert plan.cfg["seed"] == 0 and plan.cfg["device"] == "auto"
    assert plan.cfg["run_dir"].startswith("outputs/runs/")
    assert plan.spec.inputs["image"].shape == (3, 32, 32)
    assert plan.spec.targets["shape"].class_names == ["circle", "square", "triangle", "cross"]
    assert plan.tasks["segmentation"]["ignore_index"] == plan.spec.targets["segmentation"].ignore_index
    assert plan.tasks["shape"]["directions"] == {"accuracy": "higher", "f1": "higher"}
    assert plan.tasks["size"]["directions"]["mae"] == "lower"


def test_overrides_reach_the_plan():
    plan = validate(
        compose(
            [
                "tasks.shape.weight=0.5",
                "tasks.size.role=auxiliary",
                "tasks.present.enabled=false",
                "trainer.monitor=shape/f1",
                "+tasks.shape.head={name: mlp, hidden: [16]}",
                "data.train_size=10",
            ]
        )
    )
    assert set(plan.tasks) == {"shape", "size", "segmentation"}
    assert plan.tasks["shape"]["weight"] == 0.5
    assert plan.tasks["size"]["role"] == "auxiliary"
    assert plan.tasks["shape"]["head"] == {"name": "mlp", "hidden": [16]}
    assert plan.cfg["trainer"]["monitor"] == "shape/f1"
    assert plan.source.sizes["train"] == 10


def test_user_config_dir_overrides_builtin(tmp_path, monkeypatch):
    user = tmp_path / "myconf"
    (user / "data").mkdir(parents=True)
    (user / "experiment").mkdir()
    (user / "data" / "shapes.yaml").write_text("name: shapes\ntrain_size: 64\nval_size: 16\ntest_size: 16\n")
    (user / "experiment" / "mine.yaml").write_text("# @package _global_\ntrainer:\n  batch_size: 8\n")
    monkeypatch.setenv(ENV, str(user))
    assert "mine" in group_options("experiment") and "shapes_all" in group_options("experiment")
    cfg = compose(["experiment=mine"])
    assert cfg.data.train_size == 64 and cfg.data.val_size == 16
    assert cfg.trainer.batch_size == 8
    assert "image_size" not in cfg.data  # the user's file replaces the built-in one entirely
    plan = validate(cfg)
    assert plan.source.sizes == {"train": 64, "val": 16, "test": 16}


def test_flatten_is_the_one_flattener():
    from mtl_cli.config.typecheck import flatten

    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "a.c": {}, "d": [1, 2]}
    assert flatten({}) == {} and flatten(None) == {} and flatten([1]) == {}  # nothing at the top
