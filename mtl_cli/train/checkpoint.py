"""Checkpoint files: atomic writes, safe reads, and what a resume compares and restores.

A checkpoint is a dict of tensors and plain containers (str, int, float, bool, None, list, tuple,
dict) only, so it loads with ``torch.load(weights_only=True)``: a file from elsewhere cannot run
code when it is read. It carries a format marker, the run's config as YAML text, and every piece
of state a resumed run needs (see ``Trainer.state``).
"""

from __future__ import annotations

import math
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..config.typecheck import flatten
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
    "allowed_targets",
    "device",
    "logger",
    "objectives",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.eval_every",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
    "trainer.checkpoint_every",
    "trainer.save_top_k",
    "trainer.on_nonfinite",
    "trainer.max_skipped_steps",
)


class CheckpointError(UserError):
    title = "Checkpoint error"


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomic write: a temporary file beside ``path``, flushed and fsynced, then renamed over it,
    so a kill at any moment leaves the previous file whole."""
    state = {MARKER: FORMAT, **state}
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def load_checkpoint(path: Path | str, map_location: Any = "cpu", key: str = "resume") -> dict:
    """Read an mtl_cli checkpoint, or raise CheckpointError saying what is wrong with the file."""
    path = Path(path)
    fix = "point to checkpoints/last.pt or checkpoints/best.pt of an mtl-train run directory"
    if not path.is_file():
        what = "is a directory without checkpoints/last.pt" if path.is_dir() else "does not exist"
        raise CheckpointError([Problem(key, f"checkpoint {path} {what}", fix=fix)])
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
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"cannot read {path}: truncated or not a torch checkpoint ({detail}); nothing in it was run",
                    fix="resume from another checkpoint of the run (checkpoints/best.pt, "
                    "checkpoints/top/) or start a new run",
                )
            ]
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"cannot read {path} ({size} bytes): truncated or not a torch "
                    f"checkpoint ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})",
                    fix="resume from another checkpoint of the run (checkpoints/best.pt, "
                    "checkpoints/top/) or start a new run",
                )
            ]
        ) from None
    if not isinstance(state, dict) or state.get(MARKER) is None:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError([Problem(key, f"{path} is not an mtl_cli checkpoint (top-level keys: {keys})", fix=fix)])
    if state[MARKER] > FORMAT:
        raise CheckpointError(
            [
                Problem(
                    key,
                    f"{path} has checkpoint format {state[MARKER]}; this mtl_cli reads format {FORMAT} and older",
                    fix="upgrade mtl_cli",
                )
            ]
        )
    return state


def find_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``auto`` -> run_dir/checkpoints/last.pt when it exists
    (None: a new run); a path -> that file, or <dir>/checkpoints/last.pt for a run directory."""
    if resume == "auto":
        p = run_dir / "checkpoints" / "last.pt"
        return p if p.is_file() else None
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


class TopK:
    """The ``k`` best evaluations kept as checkpoints/top/epoch=E-step=S.pt (``k`` = 0: none)."""

    def __init__(self, k: int, folder: Path):
        self.k, self.folder = k, folder
        self.entries: list[list] = []  # [score, epoch, step, file name], best first

    def update(self, score: float, epoch: int, step: int, state: Callable[[], dict]) -> None:
        if self.k <= 0 or math.isnan(score):
            return
        if len(self.entries) >= self.k and score <= self.entries[-1][0]:
            return
        name = f"epoch={epoch:04d}-step={step:07d}.pt"
        save_checkpoint(state(), self.folder / name)
        self.entries.append([score, epoch, step, name])
        self.entries.sort(key=lambda e: -e[0])  # stable: among equal scores the earlier stays first
        for _, _, _, old in self.entries[self.k :]:
            (self.folder / old).unlink(missing_ok=True)
        self.entries = self.entries[: self.k]

    def state_dict(self) -> dict:
        return {"entries": [list(e) for e in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        """Back to the checkpoint's list; files written after that checkpoint are removed."""
        self.entries = [list(e) for e in state["entries"]]
        keep = {e[3] for e in self.entries}
        if self.folder.is_dir():
            for f in self.folder.glob("*.pt"):
                if f.name not in keep:
                    f.unlink()


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
]
