"""Checkpoint files: atomic writes, safe reads, and what a resume compares and restores.

A checkpoint is a dict of tensors and plain containers (str, int, float, bool, None, list, tuple,
dict) only, so it loads with ``torch.load(weights_only=True)``: a file from elsewhere cannot run
code when it is read. It carries a format marker, the run's config as YAML text, and every piece
of state a resumed run needs (see ``Trainer.state``).

A checkpoint, and the run directory it sits in, may come from elsewhere. ``load_checkpoint`` reads
only a regular file, verifies the archive's checksums, and checks the loaded dict's structure
(every key the resume, mtl-eval and mtl-predict read, with its type and range), so a damaged or
crafted file is a CheckpointError (exit 2), never another exception. Nothing read from a
checkpoint becomes a path: the top-k list may only name the files ``TopK`` makes itself inside
checkpoints/top/ of the run. A failure to write a checkpoint (a full disk: OSError, or torch's
RuntimeError) is an OutputError (exit 2) naming the file.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..config.typecheck import flatten
from ..config.untrusted import UntrustedYAMLError, load_untrusted_yaml
from ..errors import Problem, UserError
from .rundir import OutputError, writing

MARKER = "mtl_cli_checkpoint"
FORMAT = 1

#: config keys that may change between a checkpoint and its resume (they do not shape the run's
#: model, data or optimisation, or they extend it: max_epochs/max_steps)
RESUMABLE_KEYS = (
    "run_dir",
    "resume",
    "resume_strict",
    "overwrite",
    "allowed_targets",
    "device",
    "logger",
    "objectives",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.progress",
    "trainer.num_workers",
    # execution, not the model: a checkpoint loads with any of them (bitwise equal runs need the same)
    "trainer.data_on_device",
    "trainer.compile",
    "trainer.compile_mode",
    "trainer.compile_backend",
    "trainer.channels_last",
    "trainer.devices",  # another number of processes: resumed with a warning (the data order differs)
    "trainer.dist_backend",
    "trainer.dist_timeout_s",
    "trainer.eval_batch_size",
    "trainer.eval_every",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.checkpoint_every",
    "trainer.save_top_k",
    "trainer.early_stopping",  # patience may grow or shrink when a run is continued, as max_epochs may
    "trainer.early_stopping_min_delta",
    "trainer.on_nonfinite",
    "trainer.max_skipped_steps",
)


class CheckpointError(UserError):
    title = "Checkpoint error"


#: what a checkpoint that cannot be used should be replaced with
_OTHER = "resume from another checkpoint of the run (checkpoints/best.pt, checkpoints/top/) or start a new run"
_FOREIGN = "point to checkpoints/last.pt or checkpoints/best.pt of an mtl-train run directory"

#: torch's messages when its stream writer cannot write (a full disk, a failing file system): it
#: raises RuntimeError, not OSError
_STREAM_WRITER = ("PytorchStreamWriter", "file write failed", "unexpected pos", "inline_container")


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic write: a temporary file beside ``path``, flushed and fsynced, then renamed over it,
    so a kill at any moment leaves the previous file whole.

    The temporary file is created afresh (whatever stood at its name, a file or a link planted
    there, is removed first and never written through). A failure to write it (OSError, or
    torch's RuntimeError from its stream writer on a full disk) is an OutputError naming ``path``;
    the temporary file is removed and the previous ``path`` stays as it was."""
    state = {MARKER: FORMAT, **state}
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a leftover, or a link planted to make this write land elsewhere
        try:
            with open(tmp, "xb") as f:  # exclusive: never through a link that appeared meanwhile
                try:
                    torch.save(state, f)
                except RuntimeError as e:
                    if not _write_failure(e):
                        raise
                    raise OutputError(
                        [
                            Problem(
                                str(path),
                                f"cannot write {path}: torch could not write the file "
                                f"({_first_line(e)}); the disk may be full",
                                fix="free disk space or choose another run_dir (run_dir=/path/with/space); "
                                f"the previous {path.name}, if any, is unchanged",
                            )
                        ]
                    ) from e
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _write_failure(e: BaseException) -> bool:
    """True for torch's RuntimeError about a write that failed (not a bug or a device error)."""
    text = str(e)
    cause = e.__cause__ or e.__context__
    return any(m in text for m in _STREAM_WRITER) or isinstance(cause, OSError)


def _first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (its type when the message is empty)."""
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {line[:200]}" if line else type(e).__name__


def load_checkpoint(path: Path | str, map_location: Any = "cpu", key: str = "resume") -> dict:
    """Read an mtl_cli checkpoint, or raise CheckpointError saying what is wrong with the file.

    Only a regular file is read; its archive's CRC-32 checksums are verified before anything in it
    is unpickled; it is unpickled with ``weights_only=True`` (tensors and plain containers only);
    and the result must have the structure ``Trainer.state`` writes (``check_state``): every key
    the resume, mtl-eval and mtl-predict read, with its type and range. Nothing read from the file
    escapes as another exception."""
    path = Path(path)
    _check_regular_file(path, key)
    _check_archive(path, key)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False: not advice to pass on; keep the culprit only
        lines = [ln.strip() for ln in str(e).splitlines()]
        culprit = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
        if culprit is not None:
            raise CheckpointError(
                [
                    Problem(
                        key,
                        f"refused to load {path}: it holds Python objects other than "
                        f"tensors and plain containers, which could run code when read "
                        f"({culprit[:200]}); nothing in it was run",
                        fix="only load checkpoints written by mtl-train, or convert a file you "
                        "trust to a plain state dict first",
                    )
                ]
            ) from None
        detail = next((ln for ln in lines if ln.startswith("Unsupported")), "refused by weights-only loading")
        raise _unreadable(path, key, detail[:200]) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes torch raise
        raise _unreadable(path, key, _first_line(e)) from None
    if not isinstance(state, dict) or MARKER not in state:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            [Problem(key, f"{path} is not an mtl_cli checkpoint (top-level keys: {keys})", fix=_FOREIGN)]
        )
    marker = state[MARKER]
    if not _is_int(marker) or marker < 1:
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"{path}: {MARKER} must be a format number from 1 to {FORMAT}, not {_show(marker)}; "
                    "the file is damaged or was not written by mtl-train",
                    fix=_OTHER,
                )
            ]
        )
    if marker > FORMAT:
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"{path} has checkpoint format {marker}; this mtl_cli reads format {FORMAT} and older",
                    fix="upgrade mtl_cli",
                )
            ]
        )
    check_state(state, path, key)
    return state


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError:
        return "size unknown"


def _unreadable(path: Path, key: str, detail: str) -> CheckpointError:
    return CheckpointError(
        [
            Problem(
                key,
                f"cannot read {path} ({_size(path)}): truncated or not a torch checkpoint ({detail}); "
                "nothing in it was run",
                fix=_OTHER,
            )
        ]
    )


def _check_regular_file(path: Path, key: str) -> None:
    """Only a regular file (or a link to one) is read: not a folder, a device, a pipe or nothing."""
    if path.is_file():
        return
    if path.is_dir():
        what = "is a folder, not a checkpoint file"
    elif path.is_symlink():
        what = "is a link to nothing (its target does not exist)"
    elif path.exists():
        what = "is not a regular file (a device, a pipe or a socket)"
    else:
        what = "does not exist"
    raise CheckpointError([Problem(key, f"checkpoint {path} {what}", fix=_FOREIGN)])


def _check_archive(path: Path, key: str) -> None:
    """A checkpoint is a zip archive of uncompressed records (torch's format since 1.6): read its
    directory and every record's CRC-32, so a damaged file is refused before anything in it is
    unpickled (one extra read of the file, about a second per GB). Archives written with torch's
    CRC-32 turned off (``torch.serialization.set_crc32_options(False)``: every checksum 0) are
    not verified."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if not infos:
                raise zipfile.BadZipFile("an empty archive")
            if all(i.CRC == 0 for i in infos):
                return
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:  # torch stores; a compressed record could be a bomb
                    raise zipfile.BadZipFile(f"record {info.filename[:80]!r} is compressed, torch's never are")
                with z.open(info) as f:  # zipfile checks the CRC-32 at the end of each record
                    while f.read(1 << 20):
                        pass
    except Exception as e:  # noqa: BLE001 - whatever a damaged archive makes zipfile raise
        detail = (
            "not a zip archive, as every checkpoint mtl-train writes is"
            if isinstance(e, zipfile.BadZipFile) and "not a zip file" in str(e)
            else _first_line(e)
        )
        raise _unreadable(path, key, detail) from None


def find_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` -> run_dir/checkpoints/last.pt when it exists
    (None: a new run); a path -> that file, or <dir>/checkpoints/last.pt for a run directory.

    ``auto`` starts over only when nothing stands at checkpoints/last.pt: a folder, a link to
    nothing, or anything else that is not a regular file there is a CheckpointError, never a
    silent new run over the old one."""
    if resume == "auto":
        p = run_dir / "checkpoints" / "last.pt"
        if p.is_file():
            return p
        if p.is_symlink() or p.exists():
            what = "a folder" if p.is_dir() else "a link to nothing" if not p.exists() else "not a regular file"
            raise CheckpointError(
                [
                    Problem(
                        "resume",
                        f"{p} is {what}, not a checkpoint: resume=auto does not start the run over it",
                        "auto",
                        fix=f"remove or rename {p} to start a new run in this run_dir, resume from "
                        "checkpoints/best.pt or checkpoints/top/ of the run, or choose another run_dir",
                    )
                ]
            )
        return None
    p = Path(resume).expanduser()
    if p.is_dir():
        return p / "checkpoints" / "last.pt"
    return p


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (<run>/checkpoints/x.pt or <run>/checkpoints/top/x.pt)."""
    for parent in checkpoint.resolve().parents:
        if parent.name == "checkpoints":
            return parent.parent
    return checkpoint.resolve().parent


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def config_differences(saved_yaml: str, cfg: dict) -> list[tuple[str, Any, Any]]:
    """(key, value in the checkpoint, value now) for every key that shapes the run and differs."""
    saved = flatten(yaml.safe_load(saved_yaml))
    now = flatten(cfg)
    out = []
    for k in sorted(set(saved) | set(now)):
        if _resumable(k):
            continue
        a, b = saved.get(k), now.get(k)  # a key absent on one side (e.g. added by a newer version) counts as null
        if a != b:
            out.append((k, a, b))
    return out


def check_same_config(saved_yaml: str, cfg: dict, path: Path) -> list[tuple[str, Any, Any]]:
    """Raise CheckpointError when the config differs from the checkpoint's in keys that shape the
    run (unless resume_strict=false, which returns them for a warning)."""
    diff = config_differences(saved_yaml, cfg)
    if diff and cfg.get("resume_strict", True):
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diff[:12])
        more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
        raise CheckpointError(
            [
                Problem(
                    "resume",
                    f"{path} was written with other settings: {shown}{more}",
                    allowed="changes to " + ", ".join(RESUMABLE_KEYS),
                    fix="resume with the run's own settings (drop those overrides), start a "
                    "new run in another run_dir, or set resume_strict=false to accept them",
                )
            ]
        )
    return diff


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """``model.load_state_dict`` with a message naming the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
            if items:
                parts.append(f"{len(items)} {name} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
        raise CheckpointError(
            [
                Problem(
                    "resume",
                    f"{path} holds another model: parameters " + "; ".join(parts),
                    fix="resume with the architecture, backbone and tasks of that run",
                )
            ]
        )
    model.load_state_dict(state)


# ---------------------------------------------------------------- what a checkpoint must hold
class _Bad(Exception):
    """A value of a checkpoint that is missing or of the wrong type: where (a dotted key) and what."""

    def __init__(self, where: str, what: str):
        super().__init__(f"{where} {what}")
        self.where, self.what = where, what


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_path(parent: str, key: Any) -> str:
    """``parent.key`` for a plain name, ``parent[0]`` for an index, ``parent['a.b']`` otherwise."""
    if isinstance(key, str) and _NAME.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


def _show(v: Any) -> str:
    if torch.is_tensor(v):
        return f"a {v.dtype} tensor of shape {tuple(v.shape)}"
    text = repr(v)
    return f"{type(v).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _get(d: dict, where: str, key: str) -> Any:
    if key not in d:
        raise _Bad(key_path(where, key), "is missing")
    return d[key]


def _dict(v: Any, where: str, keys: type | tuple = str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(where, f"must be a dict, not {_show(v)}")
    for k in v:
        if not isinstance(k, keys) or isinstance(k, bool):
            raise _Bad(key_path(where, k), "has a key of the wrong type")
    return v


def _list(v: Any, where: str, length: int | None = None) -> list | tuple:
    if not isinstance(v, (list, tuple)) or (length is not None and len(v) != length):
        size = f" of {length} items" if length is not None else ""
        raise _Bad(where, f"must be a list{size}, not {_show(v)}")
    return v


def _int(v: Any, where: str) -> int:
    if not _is_int(v) or v < 0:
        raise _Bad(where, f"must be an integer >= 0, not {_show(v)}")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _Bad(where, f"must be a string, not {_show(v)}")
    return v


def _score(v: Any, where: str) -> float:
    """A model-selection score: a finite number, or -inf (the worst, where a metric was infinite)."""
    if not _is_number(v) or not (math.isfinite(v) or v == -math.inf):
        raise _Bad(where, f"must be a finite number or -inf, not {_show(v)}")
    return float(v)


def _tensor(v: Any, where: str, dtype: torch.dtype | None = None, floating: bool = False) -> torch.Tensor:
    if not torch.is_tensor(v) or (dtype is not None and v.dtype != dtype) or (floating and not v.is_floating_point()):
        want = f"a {dtype} tensor" if dtype is not None else "a floating tensor" if floating else "a tensor"
        raise _Bad(where, f"must be {want}, not {_show(v)}")
    return v


def _weights(v: Any, where: str) -> None:
    """A module's state dict: names -> tensors (an ``_extra_state`` entry may hold anything)."""
    for k, t in _dict(v, where).items():
        if not k.endswith("_extra_state"):
            _tensor(t, key_path(where, k))


def _generator(v: Any, where: str) -> None:
    """A torch generator's state: tried on a fresh generator."""
    t = _tensor(v, where, torch.uint8)
    try:
        torch.Generator().set_state(t.cpu())
    except Exception as e:  # noqa: BLE001
        raise _Bad(where, f"is not a torch generator state ({_first_line(e)})") from None


def _optimizer(v: Any, where: str) -> None:
    """An optimizer's state dict: param_groups (each with its parameter indices) and state."""
    opt = _dict(v, where)
    groups_at, state_at = key_path(where, "param_groups"), key_path(where, "state")
    ids: set[int] = set()
    for i, group in enumerate(_list(_get(opt, where, "param_groups"), groups_at)):
        at = key_path(groups_at, i)
        params_at = key_path(at, "params")
        for j, pid in enumerate(_list(_get(_dict(group, at), at, "params"), params_at)):
            ids.add(_int(pid, key_path(params_at, j)))
    for pid, s in _dict(_get(opt, where, "state"), state_at, int).items():
        if pid not in ids:
            raise _Bad(key_path(state_at, pid), "belongs to no parameter of the param_groups")
        _dict(s, key_path(state_at, pid))


def _scaler(v: Any, where: str) -> None:
    s = _dict(v, where)
    if not s:  # a disabled GradScaler (no fp16)
        return
    for k in ("scale", "growth_factor", "backoff_factor"):
        x = _get(s, where, k)
        if not _is_number(x) or not math.isfinite(x):
            raise _Bad(key_path(where, k), f"must be a finite number, not {_show(x)}")
    for k in ("growth_interval", "_growth_tracker"):
        _int(_get(s, where, k), key_path(where, k))


def _scheduler(v: Any, where: str) -> None:
    if v is None:
        return
    for k in _dict(v, where):
        if k == "optimizer" or k.startswith("__"):  # load_state_dict sets attributes: not these
            raise _Bad(key_path(where, k), "is not a scheduler setting")


def _progress(v: Any, where: str) -> dict:
    p = _dict(v, where)
    for k in ("epoch", "step", "micro"):
        _int(_get(p, where, k), key_path(where, k))
    t = _get(p, where, "train_time")
    if not _is_number(t) or not math.isfinite(t) or t < 0:
        raise _Bad(key_path(where, "train_time"), f"must be a finite number >= 0 (seconds), not {_show(t)}")
    for k in p:
        if k not in ("epoch", "step", "micro", "train_time"):
            raise _Bad(key_path(where, k), "is not a progress counter")
    return p


def _selector(v: Any, where: str, tasks: list[str]) -> dict:
    s = _dict(v, where)
    ref = _get(s, where, "reference")
    if ref is not None:
        for k, x in _dict(ref, key_path(where, "reference")).items():
            if k not in tasks:
                raise _Bad(key_path(key_path(where, "reference"), k), f"names no task of the checkpoint ({tasks})")
            if not _is_number(x):
                raise _Bad(key_path(key_path(where, "reference"), k), f"must be a number, not {_show(x)}")
    _score(_get(s, where, "best_score"), key_path(where, "best_score"))
    best = _get(s, where, "best_epoch")
    if best is not None:
        _int(best, key_path(where, "best_epoch"))
    return s


def _history(v: Any, where: str) -> list | tuple:
    h = _list(v, where)
    for i, rec in enumerate(h):
        at = key_path(where, i)
        for k, x in _dict(rec, at).items():
            if x is not None and not isinstance(x, (str, int, float)):
                raise _Bad(key_path(at, k), f"must be a number or a string, not {_show(x)}")
        _int(_get(rec, at, "epoch"), key_path(at, "epoch"))
        _int(_get(rec, at, "step"), key_path(at, "step"))
    return h


def _stream(v: Any, where: str) -> None:
    s = _dict(v, where)
    counts = {}
    for part in ("pass_no", "taken"):
        at = key_path(where, part)
        counts[part] = _dict(_get(s, where, part), at)
        for k, x in counts[part].items():
            _int(x, key_path(at, k))
    if set(counts["pass_no"]) != set(counts["taken"]):
        raise _Bad(key_path(where, "taken"), "must name the datasets of stream.pass_no")
    _int(_get(s, where, "position"), key_path(where, "position"))
    _generator(_get(s, where, "epoch_generator"), key_path(where, "epoch_generator"))
    _int(_get(s, where, "epoch_turn"), key_path(where, "epoch_turn"))


def _accumulators(v: Any, where: str, n: int) -> None:
    a = _dict(v, where)
    for k in ("loss", "weight", "count"):
        t = _tensor(_get(a, where, k), key_path(where, k), floating=True)
        if tuple(t.shape) != (n,):
            raise _Bad(key_path(where, k), f"must hold one value per task ({n}), not {_show(t)}")
    _int(_get(a, where, "samples"), key_path(where, "samples"))


def _rng(v: Any, where: str) -> None:
    r = _dict(v, where)
    _generator(_get(r, where, "torch"), key_path(where, "torch"))
    py = _list(_get(r, where, "python"), key_path(where, "python"), 3)
    try:
        random.Random().setstate((py[0], tuple(py[1]), py[2]))
    except Exception as e:  # noqa: BLE001
        raise _Bad(key_path(where, "python"), f"is not a Python random state ({_first_line(e)})") from None
    if "cuda" in r:
        for i, t in enumerate(_list(r["cuda"], key_path(where, "cuda"))):
            _tensor(t, key_path(key_path(where, "cuda"), i), torch.uint8)
    if "numpy" in r:
        at = key_path(where, "numpy")
        kind, keys, pos, has_gauss, gauss = _list(r["numpy"], at, 5)
        _tensor(keys, key_path(at, 1), torch.int64)
        try:
            import numpy as np

            if not (isinstance(kind, str) and _is_int(pos) and _is_int(has_gauss) and _is_number(gauss)):
                raise TypeError(f"kind, position, has_gauss, gauss: {kind!r}, {pos!r}, {has_gauss!r}, {gauss!r}")
            np.random.RandomState().set_state((kind, keys.cpu().numpy().astype("uint32"), pos, has_gauss, gauss))
        except ImportError:
            pass
        except Exception as e:  # noqa: BLE001
            raise _Bad(at, f"is not a numpy random state ({_first_line(e)})") from None


def _config_yaml(v: Any, where: str) -> None:
    """The run's config as YAML text, read as untrusted data (bounded, no aliases: comparing a
    "billion laughs" text with the config would never end) and a mapping."""
    try:
        cfg = load_untrusted_yaml(_str(v, where))
    except UntrustedYAMLError as e:
        raise _Bad(where, f"is refused: {str(e)[:200]}") from None
    if not isinstance(cfg, dict):
        raise _Bad(where, f"must be a YAML mapping, not {type(cfg).__name__}")


def _early_stopping(v: Any, where: str) -> None:
    e = _dict(v, where)
    best = _get(e, where, "best")
    if best is not None:
        _score(best, key_path(where, "best"))
    _int(_get(e, where, "stale"), key_path(where, "stale"))
    if _get(e, where, "stopped_at") is not None:
        _int(e["stopped_at"], key_path(where, "stopped_at"))
    for k in e:
        if k not in ("best", "stale", "stopped_at"):
            raise _Bad(key_path(where, k), "is not an early-stopping value")


def _structure(s: dict) -> None:
    """Raise _Bad at the first value of ``s`` that ``Trainer.state`` would not have written."""
    _str(_get(s, "", "kind"), "kind")
    tasks = list(_list(_get(s, "", "task_names"), "task_names"))
    for i, t in enumerate(tasks):
        _str(t, key_path("task_names", i))
    if not tasks or len(set(tasks)) != len(tasks):
        raise _Bad("task_names", f"must list each task once, not {_show(tasks)}")
    _weights(_get(s, "", "model"), "model")
    _optimizer(_get(s, "", "optimizer"), "optimizer")
    _scheduler(_get(s, "", "scheduler"), "scheduler")
    _scaler(_get(s, "", "scaler"), "scaler")
    _weights(_get(s, "", "weighting"), "weighting")
    epoch, step = _int(_get(s, "", "epoch"), "epoch"), _int(_get(s, "", "step"), "step")
    prog = _progress(_get(s, "", "progress"), "progress")
    if (prog["epoch"], prog["step"]) != (epoch, step):
        raise _Bad("progress", f"must count the checkpoint's epoch {epoch} and step {step}, not {_show(prog)}")
    sel = _selector(_get(s, "", "selector"), "selector", tasks)
    history = _history(_get(s, "", "history"), "history")
    if sel["best_epoch"] is not None and all(h["epoch"] != sel["best_epoch"] for h in history):
        raise _Bad("selector.best_epoch", f"names epoch {sel['best_epoch']}, which has no record in history")
    top = _dict(_get(s, "", "top_k"), "top_k")
    top_k_entries(_get(top, "top_k", "entries"), "top_k.entries")
    _stream(_get(s, "", "stream"), "stream")
    _accumulators(_get(s, "", "accumulators"), "accumulators", len(tasks))
    _int(_get(s, "", "skipped"), "skipped")
    if "early_stopping" in s:
        _early_stopping(_get(s, "", "early_stopping"), "early_stopping")
    if "ema" in s:  # trainer.ema: the training weights beside the averaged model
        e = _dict(s["ema"], "ema")
        _weights(_get(e, "ema", "raw"), "ema.raw")
        _int(_get(e, "ema", "updates"), "ema.updates")
    _int(_get(s, "", "metrics_records"), "metrics_records")
    _rng(_get(s, "", "rng"), "rng")
    if "world" in s:  # written by a run of several processes: each one's random state
        world = _int(s["world"], "world")
        ranks = _list(_get(s, "", "rng_ranks"), "rng_ranks")
        if world < 2 or len(ranks) != world:
            raise _Bad("rng_ranks", f"must hold one random state per process ({world}), not {len(ranks)}")
        for i, r in enumerate(ranks):
            _rng(r, key_path("rng_ranks", i))
    _config_yaml(_get(s, "", "config_yaml"), "config_yaml")


def check_state(state: dict, path: Path | str, key: str = "resume") -> None:
    """Raise CheckpointError naming ``path`` and the first key of ``state`` that is missing or
    of a type or value ``Trainer.state`` never writes (see ``_structure``)."""
    try:
        _structure(state)
    except _Bad as e:
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"{path}: {e.where} {e.what}; the file is damaged or was not written by mtl-train, "
                    "and nothing in it was used",
                    fix=_OTHER,
                )
            ]
        ) from None


# ---------------------------------------------------------------- the k best evaluations
#: the file name of a top-k checkpoint, made from its epoch and step (TopK.file_name)
TOP_K_NAME = re.compile(r"epoch=\d{4,}-step=\d{7,}\.pt")


def top_k_entries(entries: Any, where: str = "top_k.entries") -> list[list]:
    """The top-k list of a checkpoint, checked: each entry ``[score, epoch, step, file name]`` with
    a score that is a finite number or -inf, integers >= 0 for epoch and step, and exactly the bare
    file name TopK makes from them (``epoch=EEEE-step=SSSSSSS.pt``: no folder, no ``..``, no
    absolute path). Raises _Bad naming the entry."""
    out, seen = [], set()
    for i, e in enumerate(_list(entries, where)):
        at = key_path(where, i)
        score, epoch, step, name = _list(e, at, 4)
        _score(score, key_path(at, 0))
        _int(epoch, key_path(at, 1))
        _int(step, key_path(at, 2))
        own = TopK.file_name(epoch, step)
        if name != own:
            raise _Bad(
                at,
                f"names the file {name!r}, not the top-k checkpoint {own!r} that mtl-train writes for "
                f"epoch {epoch}, step {step} (a bare name inside checkpoints/top/); refused: no file was touched",
            )
        if name in seen:
            raise _Bad(at, f"names {name!r} a second time")
        seen.add(name)
        out.append([float(score), epoch, step, name])
    return out


class TopK:
    """The ``k`` best evaluations kept as checkpoints/top/epoch=E-step=S.pt (``k`` = 0: none).

    The list comes back from a checkpoint (``load_state_dict``), which may come from elsewhere: an
    entry is only ever the bare file name TopK makes from its epoch and step, resolved inside
    ``folder``, and ``folder`` must be a real folder inside the run directory ``root`` (by default
    ``folder``'s grandparent: <run>/checkpoints/top). Anything else is refused (CheckpointError)
    before any file is removed; a top-k file that is a link is refused too, and only files named
    as TopK names them are ever removed from ``folder``."""

    def __init__(self, k: int, folder: Path, root: Path | None = None):
        self.k, self.folder = k, folder
        self.root = root if root is not None else folder.parent.parent
        self.entries: list[list] = []  # [score, epoch, step, file name], best first

    @staticmethod
    def file_name(epoch: int, step: int) -> str:
        return f"epoch={epoch:04d}-step={step:07d}.pt"

    def update(self, score: float, epoch: int, step: int, state: Callable[[], dict]) -> None:
        if self.k <= 0 or math.isnan(score):
            return
        if len(self.entries) >= self.k and score <= self.entries[-1][0]:
            return
        name = self.file_name(epoch, step)
        self._check_folder()
        save_checkpoint(state(), self._path(name))
        self.entries.append([score, epoch, step, name])
        self.entries.sort(key=lambda e: -e[0])  # stable: among equal scores the earlier stays first
        for _, _, _, old in self.entries[self.k :]:
            self._remove(old)
        self.entries = self.entries[: self.k]

    def state_dict(self) -> dict:
        return {"entries": [list(e) for e in self.entries]}

    def load_state_dict(self, state: dict, source: Path | str | None = None) -> None:
        """Back to the checkpoint's list; files written after that checkpoint are removed.
        ``source``: the checkpoint file, for the message when the list is refused."""
        where = source if source is not None else self.folder
        try:
            entries = top_k_entries(_get(_dict(state, "top_k"), "top_k", "entries"), "top_k.entries")
        except _Bad as e:
            raise CheckpointError(
                [
                    Problem(
                        "resume", f"{where}: {e.where} {e.what}", fix=_OTHER + "; do not resume a run you do not trust"
                    )
                ]
            ) from None
        self._check_folder()
        for i, (_, _, _, name) in enumerate(entries):
            p = self._path(name)
            if p.is_symlink() or (p.exists() and not p.is_file()):
                kind = "a link" if p.is_symlink() else "not a regular file"
                raise CheckpointError(
                    [
                        Problem(
                            "resume",
                            f"{where}: top_k.entries[{i}] names {p}, which is {kind}; top-k checkpoints are "
                            "files the run wrote itself. Refused: no file was touched",
                            fix=f"remove {p} (a link, not what it points to) or resume from another checkpoint",
                        )
                    ]
                )
        self.entries = entries
        keep = {e[3] for e in entries}
        if self.folder.is_dir():
            with writing(self.folder):
                for f in sorted(self.folder.iterdir()):
                    if TOP_K_NAME.fullmatch(f.name) and f.name not in keep and (f.is_symlink() or f.is_file()):
                        f.unlink()  # a link itself, never what it points to

    def _path(self, name: str) -> Path:
        """``folder/name`` for a name TopK makes, checked to lie directly inside ``folder``."""
        p = self.folder / name
        if not TOP_K_NAME.fullmatch(name) or p.parent != self.folder:
            raise CheckpointError([Problem("resume", f"{name!r} is not a top-k checkpoint name", fix=_OTHER)])
        return p

    def _remove(self, name: str) -> None:
        p = self._path(name)
        with writing(p):
            if p.is_symlink() or p.is_file():
                p.unlink()

    def _check_folder(self) -> None:
        """``folder`` is absent, or a real folder (not a link) whose resolved path lies inside the
        run directory."""
        f = self.folder
        if f.is_symlink():
            kind = "a link"
        elif not f.exists():
            return
        elif not f.is_dir():
            kind = "not a folder"
        elif not f.resolve().is_relative_to(self.root.resolve()):
            kind = "outside the run directory"
        else:
            return
        raise CheckpointError(
            [
                Problem(
                    "resume",
                    f"{f} is {kind} (it resolves to {os.path.realpath(f)}): top-k checkpoints are only "
                    f"written and removed in a folder inside the run directory {self.root}. Refused: no file "
                    "was touched",
                    fix=f"remove {f} (a link, not what it points to) or choose another run_dir",
                )
            ]
        )


# ---------------------------------------------------------------- random number generators
def rng_state() -> dict:
    """Every global generator's state as tensors and plain containers."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(gauss)]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v = state["python"]
    random.setstate((v[0], tuple(v[1]), v[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        try:
            import numpy as np

            kind, keys, pos, has_gauss, gauss = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
        except ImportError:
            pass


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def all_finite(state: dict) -> bool:
    """True when every floating tensor of a (model) state dict is finite."""
    return all(bool(torch.isfinite(t).all()) for t in state.values() if torch.is_tensor(t) and t.is_floating_point())


__all__ = [
    "CheckpointError",
    "OutputError",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "run_dir_of",
    "config_differences",
    "check_same_config",
    "load_model_state",
    "rng_state",
    "set_rng_state",
    "all_finite",
    "TopK",
    "TOP_K_NAME",
    "top_k_entries",
    "check_state",
    "key_path",
]
