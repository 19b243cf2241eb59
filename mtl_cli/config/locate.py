"""Where configs live: the built-in conf/ and the user's own config directories.

Built-in configs are the top-level ``conf/`` of a source checkout or editable install, and
``mtl_cli/conf`` inside an installed wheel (the same files, packaged). User directories come from
``--config-dir`` / ``-cd`` (mtl-train moves them into ``MTL_CONFIG_DIR``) or ``MTL_CONFIG_DIR``
itself (several joined with ``os.pathsep``); they are searched *before* the built-ins, so a file
there with a built-in's name (say ``data/shapes.yaml``) replaces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "MTL_CONFIG_DIR"


def builtin_config_dir() -> Path:
    pkg = Path(__file__).resolve().parents[1]  # .../mtl_cli
    for cand in (pkg / "conf", pkg.parent / "conf"):
        if (cand / "train.yaml").is_file():
            return cand
    raise FileNotFoundError(
        f"mtl_cli's built-in configs are missing (looked in {pkg / 'conf'} and {pkg.parent / 'conf'})"
    )


def user_config_dirs() -> list[Path]:
    raw = os.environ.get(ENV, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p]


def resume_command(run_dir) -> str:
    """The command that continues a run: the user's config directories (``--config-dir``), then
    ``resume=<run dir>``."""
    import shlex

    dirs = [str(d) for d in user_config_dirs()]
    return shlex.join(["mtl-train", *[x for d in dirs for x in ("--config-dir", d)], f"resume={run_dir}"])


def search_dirs() -> list[Path]:
    """Every config directory in search order (user dirs first)."""
    return [*user_config_dirs(), builtin_config_dir()]


class UserConfigSearchPath(SearchPathPlugin):
    """Puts the user's config directories in front of every other search path entry."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for d in reversed(user_config_dirs()):
            search_path.prepend(provider="mtl-user", path=f"file://{d}")


_registered = False


def register_search_path_plugin() -> None:
    global _registered
    if not _registered:
        Plugins.instance().register(UserConfigSearchPath)
        _registered = True


def group_options(group: str) -> list[str]:
    """Options of a config group across all search dirs, e.g. group_options("backbone")."""
    names: set[str] = set()
    for d in search_dirs():
        g = d / group
        if g.is_dir():
            names.update(p.stem for p in g.glob("*.yaml"))
    return sorted(names)


def is_group(key: str) -> bool:
    return any((d / key).is_dir() for d in search_dirs())
