"""Load a finished run directory: its config, tasks, model and the weights of one checkpoint.

``load_run(run_dir, checkpoint, overrides)`` is what ``mtl-eval`` and ``mtl-predict`` start from.
The run's saved ``config.yaml`` is validated again, with ``overrides`` (dotted ``key=value``
strings, in mtl-train's value grammar) merged on top. Only keys that cannot change the model may
be overridden: the data (``data.*``, ``datasets.*``), the device, the evaluation batch size and
precision, and ``allowed_targets``.

Security: a run directory may come from elsewhere. The saved config's ``allowed_targets`` is
dropped before validation, so the run cannot widen the modules a ``_target_`` may name; only an
``allowed_targets=[...]`` that the user passes in ``overrides`` counts. Checkpoints load with
``weights_only=True`` (``train.checkpoint.load_checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .build import build_model, build_tasks
from .config.untrusted import MAX_DEPTH, UntrustedYAMLError, load_untrusted_yaml, nesting_depth
from .data.base import PRIMARY, qualify
from .errors import ConfigError, Problem, UserError
from .models.base import MTLModel
from .tasks.base import Task
from .train.checkpoint import CheckpointError, load_checkpoint, load_model_state
from .train.trainer import autocast_for, resolve_device
from .validation import Plan, validate

#: the longest override accepted (as mtl-train's command line)
MAX_OVERRIDE_CHARS = 100_000

#: checkpoint names of a run directory (anything else is a path to a .pt file)
CHECKPOINTS = ("best", "last")

#: config keys an evaluation or prediction may override: a key, or a section ending in "."
OVERRIDABLE = (
    "data.",
    "datasets.",
    "allowed_targets",
    "device",
    "trainer.eval_batch_size",
    "trainer.num_workers",
    "trainer.precision",
)


@dataclass
class LoadedRun:
    """A finished run, ready to evaluate or predict: the plan, tasks and model with its weights."""

    run_dir: Path
    plan: Plan
    tasks: list[Task]
    model: MTLModel
    checkpoint: Path  # the .pt file the weights come from
    checkpoint_name: str  # best, last, or the file's stem
    step: int
    epoch: int
    device: torch.device
    overrides: list[str] = field(default_factory=list)  # as given, normalised (key=value)
    data_info: dict = field(default_factory=dict)  # the run's data.json ({} when absent)

    @property
    def autocast(self):
        return autocast_for(self.plan.cfg["trainer"]["precision"], self.device)

    def artifacts(self, dataset: str = "data") -> dict:
        """What the run recorded about ``dataset`` (label maps, features, statistics): the
        source's artifacts with the run's data.json on top (data.json records the primary dataset)."""
        out = dict(self.plan.specs[dataset].artifacts) if dataset in self.plan.specs else {}
        if dataset == "data":
            out |= {k: v for k, v in self.data_info.items() if k not in ("splits", "datasets", "sampling")}
        return out


def overridable(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in OVERRIDABLE)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any, str]]:
    """``key=value`` strings -> (key, value, normalised text); values in mtl-train's grammar
    (numbers, null, [lists], {maps}, quoted strings). ConfigError names every bad one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, out, problems = OverridesParser.create(), [], []
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+")
        allowed = ", ".join(k + "*" if k.endswith(".") else k for k in OVERRIDABLE)
        if "=" not in text or not key or text.startswith("~"):
            problems.append(
                Problem(
                    key or text,
                    "expected key=value",
                    text,
                    allowed=allowed,
                    fix="write overrides as key=value, e.g. data.seed=5",
                )
            )
            continue
        if not overridable(key):
            problems.append(
                Problem(
                    key,
                    "cannot be overridden here: only the data, the device and evaluation "
                    "settings may change (the model, its tasks and weights are the run's)",
                    text,
                    allowed=allowed,
                    fix=f"remove {text}; to train with it, use mtl-train",
                )
            )
            continue
        if len(text) > MAX_OVERRIDE_CHARS or nesting_depth(text) > MAX_DEPTH:
            problems.append(
                Problem(
                    key,
                    f"too long or nested too deeply (at most {MAX_OVERRIDE_CHARS:,} characters and {MAX_DEPTH} "
                    "levels of brackets)",
                    text[:60] + ("..." if len(text) > 60 else ""),
                    fix="flatten the value",
                )
            )
            continue
        try:
            (o,) = parser.parse_overrides([text.lstrip("+")])
        except RecursionError:
            problems.append(Problem(key, "nested too deeply to parse", text[:60], fix="flatten the value"))
            continue
        except HydraException as e:
            problems.append(
                Problem(
                    key,
                    f"cannot parse the value: {' '.join(str(e).split())}",
                    text,
                    fix="quote values with spaces or brackets, e.g. data.path='my file.csv'",
                )
            )
            continue
        if o.is_sweep_override():
            problems.append(
                Problem(
                    key,
                    "several values (a sweep) are not supported here",
                    text,
                    fix="give one value; run the command once per value",
                )
            )
            continue
        value = o.value()
        out.append((key, value, f"{key}={_text(value)}"))
    if problems:
        raise ConfigError(problems)
    return out


def _text(value: Any) -> str:
    """A value as it would be written on the command line (stable: for names and hashes)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def short_hash(items: list[str]) -> str:
    """8 hex digits that name a set of overrides (order does not matter)."""
    return hashlib.sha1("\n".join(sorted(items)).encode()).hexdigest()[:8]


def _set(node: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value


def read_config(run_dir: Path) -> dict:
    """The run's saved config.yaml as plain data (never interpreted: no interpolation, no tags)."""
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise CheckpointError(
            [
                Problem(
                    "run_dir",
                    f"{run_dir} {what}",
                    str(run_dir),
                    fix="give the folder of a finished mtl-train run (it holds config.yaml and checkpoints/)",
                )
            ]
        )
    if not path.is_file():
        raise CheckpointError(
            [
                Problem(
                    "run_dir",
                    f"{run_dir} has no config.yaml: not an mtl-train run directory, or the run did not start",
                    str(run_dir),
                    fix="give the folder of a finished mtl-train run (the folder that holds "
                    "config.yaml, summary.json and checkpoints/)",
                )
            ]
        )
    try:
        cfg = load_untrusted_yaml(path.read_bytes())
    except (OSError, UntrustedYAMLError) as e:
        raise CheckpointError(
            [
                Problem(
                    str(path),
                    f"cannot read: {e}",
                    fix="repair the file, or copy it from the checkpoint's config",
                )
            ]
        ) from None
    if not isinstance(cfg, dict):
        raise CheckpointError([Problem(str(path), "not a config mapping", type(cfg).__name__, fix="repair the file")])
    return cfg


#: keys of a data node (``data``, ``datasets.<name>``) that hold a file or folder: a relative one
#: was read from the folder the run was started in
PATH_KEYS = ("path", "val_path", "test_path", "root")


def run_cwd(run_dir: Path) -> Path | None:
    """The folder the run was started in (Hydra's ``.hydra/hydra.yaml``: ``hydra.runtime.cwd``),
    or None when the run has no such record (a run of the Python API) or it cannot be read."""
    path = run_dir / ".hydra" / "hydra.yaml"
    try:
        doc = load_untrusted_yaml(path.read_bytes())
        cwd = doc["hydra"]["runtime"]["cwd"]
    except (OSError, UntrustedYAMLError, KeyError, TypeError):
        return None
    return Path(cwd) if isinstance(cwd, str) and Path(cwd).is_absolute() else None


def data_path_keys(cfg: dict) -> list[tuple[str, dict, str]]:
    """(dotted key, node, key) of every relative path of the run's data nodes."""
    nodes = [("data", cfg.get("data"))]
    datasets = cfg.get("datasets")
    if isinstance(datasets, dict):
        nodes += [(f"datasets.{name}", node) for name, node in datasets.items()]
    out = []
    for prefix, node in nodes:
        if not isinstance(node, dict):
            continue
        for k in PATH_KEYS:
            v = node.get(k)
            if isinstance(v, str) and v and not Path(v).expanduser().is_absolute():
                out.append((f"{prefix}.{k}", node, k))
    return out


def resolve_data_paths(cfg: dict, origin: Path | None, given: set[str]) -> list[tuple[str, str]]:
    """Relative data paths of a run, made absolute against ``origin``, the folder the run was
    started in, where they exist there (the files the run read), unless the user overrides the key
    (``given``). Returns (dotted key, relative value) of each relative path left unresolved."""
    left = []
    here = Path.cwd().resolve()
    for dotted, node, k in data_path_keys(cfg):
        if dotted in given:
            continue
        value = node[k]
        there = (origin / value) if origin is not None else None
        if origin is not None and there is not None and there.exists():
            node[k] = str(there)
            if origin.resolve() != here:
                sys.stderr.write(
                    f"{dotted}: the run read {value} in the folder it was started in: {there} "
                    f"(give {dotted}=<path> to read another)\n"
                )
        else:
            left.append((dotted, value))
    return left


def _with_path_fixes(e: UserError, left: list[tuple[str, str]], origin: Path | None) -> UserError:
    """``e`` with a fix naming the override for each relative data path the run can no longer find."""
    if not left:
        return e
    where = (
        f"is neither in the folder the run was started in ({origin}) nor here ({Path.cwd()})"
        if origin is not None
        else f"is not here ({Path.cwd()})"
    )
    problems = []
    for q in e.problems:
        text = f"{q.key} {q.message} {q.value}"
        hit = next((d for d, v in left if str(Path.cwd() / v).rstrip("/") in text or v in text), None)
        if hit is not None:
            value = dict(left)[hit]
            q = Problem(
                q.key,
                q.message,
                q.value,
                q.allowed,
                f"the run's {hit}={value} {where}: give its location, {hit}=<path>",
            )
        problems.append(q)
    try:
        return type(e)(problems)
    except TypeError:  # an error type with another constructor: as it was
        return e


def find_run_checkpoint(run_dir: Path, checkpoint: str) -> tuple[Path, str]:
    """(file, name) of ``checkpoint``: best | last (in the run's checkpoints/) or a path (as
    given, else relative to the run's checkpoints/)."""
    ckpt_dir = run_dir / "checkpoints"
    if checkpoint in CHECKPOINTS:
        path = ckpt_dir / f"{checkpoint}.pt"
        if not path.is_file():
            have = sorted(p.name for p in ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
            raise CheckpointError(
                [
                    Problem(
                        "checkpoint",
                        f"the run has no {path.relative_to(run_dir)}",
                        checkpoint,
                        allowed=", ".join(have) or "(no checkpoint in the run)",
                        fix="the run may have stopped early: choose another checkpoint, or "
                        "continue the run with mtl-train resume=" + str(run_dir),
                    )
                ]
            )
        return path, checkpoint
    path = Path(checkpoint).expanduser()
    for candidate in (path, ckpt_dir / path):
        if candidate.is_file():
            return candidate.resolve(), candidate.stem
    looks_like_path = "/" in checkpoint or checkpoint.endswith(".pt")
    top = sorted(str(p.relative_to(ckpt_dir)) for p in (ckpt_dir / "top").glob("*.pt")) if ckpt_dir.is_dir() else []
    allowed = ", ".join([*CHECKPOINTS, *top, "or the path of a .pt file"])
    if looks_like_path:
        raise CheckpointError(
            [
                Problem(
                    "checkpoint",
                    f"checkpoint file {path} does not exist",
                    checkpoint,
                    allowed=allowed,
                    fix=f"check the path (relative paths resolve against the current folder, then {ckpt_dir})",
                )
            ]
        )
    raise CheckpointError(
        [
            Problem(
                "checkpoint",
                "unknown checkpoint name",
                checkpoint,
                allowed=allowed,
                fix="use checkpoint=best (the selected epoch), checkpoint=last, or a .pt path",
            )
        ]
    )


#: the weights file of an ``mtl-export`` folder (with config.yaml and export.json beside it)
EXPORTED = "model.safetensors"


def find_exported(run_dir: Path, checkpoint: str) -> tuple[Path, str] | None:
    """(file, name) when the weights come from a safetensors export: ``checkpoint`` names a
    ``.safetensors`` file (as given, else in ``run_dir``), or ``run_dir`` is an export folder (no
    checkpoints/, a model.safetensors) and ``checkpoint`` is best or last (the exported one)."""
    if checkpoint.endswith(".safetensors"):
        for candidate in (Path(checkpoint).expanduser(), run_dir / checkpoint):
            if candidate.is_file():
                return candidate.resolve(), _exported_name(candidate)
        raise CheckpointError(
            [
                Problem(
                    "checkpoint",
                    f"weights file {checkpoint} does not exist",
                    checkpoint,
                    fix=f"check the path (relative paths resolve against the current folder, then {run_dir})",
                )
            ]
        )
    if checkpoint in CHECKPOINTS and not (run_dir / "checkpoints").is_dir() and (run_dir / EXPORTED).is_file():
        return run_dir / EXPORTED, _exported_name(run_dir / EXPORTED)
    return None


def _exported_name(path: Path) -> str:
    """The checkpoint an export was made from (its export.json), else the file's stem."""
    try:
        info = json.loads((path.parent / "export.json").read_text())
        return str(info["checkpoint"]) if isinstance(info, dict) and info.get("checkpoint") else path.stem
    except (OSError, ValueError, KeyError):
        return path.stem


def load_exported(path: Path) -> dict:
    """The weights of a safetensors export as a checkpoint's ``model``, ``step`` and ``epoch``
    (safetensors holds tensors and text only: nothing is unpickled)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            [
                Problem(
                    "checkpoint",
                    f"{path} is a safetensors file, and the safetensors package is not installed",
                    str(path),
                    fix='pip install "mtl-cli[export]" (or pip install safetensors)',
                )
            ]
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            model = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file: said with its path
        raise CheckpointError(
            [Problem("checkpoint", f"cannot read {path}: {e}", str(path), fix="export the run again (mtl-export)")]
        ) from None

    def number(key: str) -> int:
        try:
            return int(meta.get(key, 0))
        except ValueError:
            return 0

    return {"model": model, "step": number("step"), "epoch": number("epoch")}


def load_run(run_dir: str | Path, checkpoint: str = "best", overrides: list[str] | tuple[str, ...] = ()) -> LoadedRun:
    """The run in ``run_dir`` with the weights of ``checkpoint`` (best | last | a .pt path) and
    ``overrides`` merged over its config. Raises CheckpointError (missing run, config or
    checkpoint), ConfigError (bad overrides, a config that no longer validates), DataError.

    ``run_dir`` may be an ``mtl-export`` folder (config.yaml and model.safetensors), and
    ``checkpoint`` a ``.safetensors`` file: the weights are read from it (:func:`load_exported`)."""
    run_dir = Path(run_dir).expanduser().resolve()
    cfg = read_config(run_dir)
    parsed = parse_overrides(list(overrides))
    path, name = find_exported(run_dir, str(checkpoint)) or find_run_checkpoint(run_dir, str(checkpoint))
    cfg.pop("allowed_targets", None)  # a run directory from elsewhere must not widen what may be imported
    cfg.pop("hydra", None)
    cfg["allowed_targets"] = None
    cfg["device"] = "auto"  # where the run trained need not be where it is evaluated (device= overrides)
    cfg["resume"] = None
    backbone = cfg.get("backbone")
    if isinstance(backbone, dict) and isinstance(backbone.get("weights"), str):
        backbone["weights"] = None  # the checkpoint holds every weight: pretrained ones are not read (or fetched)
    # relative data paths are read where the run was started, wherever this command runs
    origin = run_cwd(run_dir)
    left = resolve_data_paths(cfg, origin, {key for key, _, _ in parsed})
    for key, value, _ in parsed:
        _set(cfg, key, value)
    try:
        plan = validate(cfg, training=False)  # no optimizer or scheduler is imported or called
    except UserError as e:
        raise _with_path_fixes(e, left, origin) from None
    if path.suffix == ".safetensors":
        state = load_exported(path)
    else:
        state = load_checkpoint(path, map_location="cpu", key="checkpoint")
    info: dict = {}
    if (run_dir / "data.json").is_file():
        try:
            info = json.loads((run_dir / "data.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            info = {}
    info = info if isinstance(info, dict) else {}
    recorded_scaling(plan, info)
    tasks = build_tasks(plan)
    device = resolve_device(plan.cfg["device"])
    model = build_model(plan, tasks)
    try:
        load_model_state(model, state["model"], path)
    except CheckpointError as e:
        raise CheckpointError(
            [
                Problem(
                    "checkpoint",
                    q.message,
                    q.value,
                    q.allowed,
                    "use a checkpoint of this run; data overrides must keep the inputs' and "
                    "targets' shapes and classes",
                )
                for q in e.problems
            ]
        ) from None
    model.to(device).eval()
    return LoadedRun(
        run_dir,
        plan,
        tasks,
        model,
        path,
        name,
        int(state.get("step", 0)),
        int(state.get("epoch", 0)),
        device,
        [text for _, _, text in parsed],
        info,
    )


def recorded_scaling(plan: Plan, info: dict) -> None:
    """Regression targets are scored and decoded with the scaling the run trained with: the one its
    data.json records (``target_scaling``, per dataset), or none where it records none (a run
    trained with ``standardize_targets=false``, or before targets were standardised), whatever the
    source would compute today. Without a data.json, the source's own scaling stands."""
    if not info or plan.spec is None:
        return
    merged_spec = plan.spec
    for d, spec in plan.specs.items():
        own = info if d == PRIMARY else (info.get("dataset_artifacts") or {}).get(d) or {}
        recorded = own.get("target_scaling") or {}
        plan.sources[d].use_recorded(own)
        for name, target in spec.targets.items():
            target.scaling = recorded.get(name)
            merged = merged_spec.targets.get(qualify(d, name))
            if merged is not None:
                merged.scaling = target.scaling
        for artifacts in (spec.artifacts, merged_spec.artifacts if d == PRIMARY else {}):
            artifacts.pop("target_scaling", None)
            if recorded:
                artifacts["target_scaling"] = recorded
