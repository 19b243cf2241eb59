"""Which callables a config's ``_target_`` may name (today ``optimizer._target_`` and
``scheduler._target_``).

A run directory's saved config is data that someone else may have written; evaluating or resuming
it must not run arbitrary code. So a ``_target_`` is imported only when its dotted path lies under
an allowed module prefix, and the check happens *before* anything is imported, since importing a
module runs its code.

The default prefixes are ``torch.optim``, ``torchvision`` and ``mtl_cli``, deliberately narrower
than all of ``torch``: ``torch.hub.load`` fetches and runs code from the internet, ``torch.load``
and friends unpickle (and so may execute) whatever a file holds, and other corners of ``torch``
(``torch.utils.cpp_extension``, ...) compile or load native code. More prefixes come from the
root key ``allowed_targets`` (``+allowed_targets=[mypkg.optim]`` on the command line, or
``allowed_targets: [mypkg.optim]`` in the config), for code the user trusts.

Matching is by whole dotted components: ``torch.optim`` allows ``torch.optim`` and
``torch.optim.AdamW``, not ``torch.optimx.AdamW``. After the import, the object found must also be
defined under an allowed prefix (``__module__``), so that an allowed module cannot pass on a
callable it merely imported from elsewhere (``torchvision.models._api`` holds
``torch.hub.load_state_dict_from_url``, for example).
"""

from __future__ import annotations

import importlib
import keyword
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, Problem

#: module prefixes whose callables any config may name
DEFAULT_PREFIXES: tuple[str, ...] = ("torch.optim", "torchvision", "mtl_cli")


def is_dotted_path(path: Any) -> bool:
    """``a.b.c`` where each part is a Python identifier and not a keyword (no spaces, no empty
    parts such as ``..`` or a leading or trailing dot)."""
    if not isinstance(path, str) or not path:
        return False
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in path.split("."))


def prefixes(extra: Iterable[str] | str | None = ()) -> tuple[str, ...]:
    """The prefixes in force: the defaults, then each well-formed ``extra`` one (once each)."""
    if isinstance(extra, str):
        extra = (extra,)
    return tuple(dict.fromkeys([*DEFAULT_PREFIXES, *(p for p in (extra or ()) if is_dotted_path(p))]))


def is_allowed(path: Any, extra: Iterable[str] | str | None = ()) -> bool:
    """Is ``path`` a dotted identifier path equal to an allowed prefix or under one (at a dot)?"""
    if not is_dotted_path(path):
        return False
    return any(path == p or path.startswith(p + ".") for p in prefixes(extra))


def _module_of(path: str) -> str:
    return path.rpartition(".")[0] or path


def _refuse(key: str, path: Any, message: str, allowed: tuple[str, ...], fix: str) -> ConfigError:
    return ConfigError([Problem(key, message, path, allowed=", ".join(allowed), fix=fix)])


def import_target(path: Any, extra: Iterable[str] | str | None = (), key: str = "_target_") -> Any:
    """Import the object that the dotted ``path`` names, when it is allowed.

    Raises :class:`ConfigError` (one problem under ``key``, the config key such as
    ``optimizer._target_``) without importing anything when ``path`` is malformed or not under an
    allowed prefix; raises :class:`ConfigError` as well when the imported object is defined outside
    the allowed modules. An allowed path that does not exist raises ``ImportError``,
    ``AttributeError`` or ``ValueError`` as the import does.
    """
    allowed = prefixes(extra)
    if not is_dotted_path(path):
        raise _refuse(
            key,
            path,
            "not a dotted path of Python names",
            allowed,
            "write the path as module.Name, e.g. torch.optim.AdamW",
        )
    if not is_allowed(path, allowed):
        module = _module_of(path)
        raise _refuse(
            key,
            path,
            "not an allowed target: a config may only name callables of the allowed modules",
            allowed,
            f"if you trust that code, allow its module with +allowed_targets=[{module}] on the command "
            f"line (or allowed_targets: [{module}] in the config)",
        )
    module, _, attr = path.rpartition(".")
    obj = getattr(importlib.import_module(module), attr)
    defined_in = getattr(obj, "__module__", None)
    if isinstance(defined_in, str) and not is_allowed(defined_in, allowed):
        real = f"{defined_in}.{getattr(obj, '__qualname__', attr)}"
        raise _refuse(
            key,
            path,
            f"not an allowed target: it is {real}, defined outside the allowed modules",
            allowed,
            f"name it by its own path ({real}) and, if you trust that code, allow its module "
            f"with +allowed_targets=[{defined_in}] (or allowed_targets: [{defined_in}] in the config)",
        )
    return obj
