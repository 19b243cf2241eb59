"""Name -> class registries. A component is one Python file that registers itself plus one YAML.

Modules of a registry's package are imported lazily the first time the registry is read, so
adding a component never means editing a list somewhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str, package: str):
        self.kind = kind  # e.g. "backbone"; used in error messages
        self.package = package  # e.g. "mtl_cli.models.backbones"
        self._items: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._items[name]


BACKBONES = Registry("backbone", "mtl_cli.models.backbones")
HEADS = Registry("head", "mtl_cli.models.heads")
ARCHS = Registry("arch", "mtl_cli.models.archs")
WEIGHTINGS = Registry("weighting", "mtl_cli.weighting")
SOURCES = Registry("data source", "mtl_cli.data.sources")
TASK_KINDS = Registry("task kind", "mtl_cli.tasks.kinds")
