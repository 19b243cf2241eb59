"""Generic checks of config nodes, shared by validation and by components that check nested
component nodes of their own (``weighting=composed``'s aggregator, ``arch=multi_input``'s stems).

A node is checked against a dataclass schema (:func:`check_schema`) or against a registered
class's constructor (:func:`check_component`: keys, types and the value domains declared in the
annotations, see :mod:`mtl_cli.config.params`). Every problem is collected in a
:class:`Problems` list, never raised one by one.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from typing import Any

from ..errors import Problem
from ..registry import Registry
from .typecheck import config_params, type_name, value_problem


def join_key(where: str, key: str) -> str:
    """Dotted key; the root section has no prefix (``seed``, not ``<root>.seed``)."""
    return f"{where}.{key}" if where else str(key)


class Problems:
    def __init__(self):
        self.items: list[Problem] = []
        self.unset: set[str] = set()  # keys left at ??? (reported once, not again as a bad value)

    def add(self, key, message, value=None, allowed=None, fix=None):
        self.items.append(Problem(key, message, value, allowed, fix))

    def report(self) -> list[Problem]:
        """The problems to show: a ??? value is reported once as unset, not again as a bad value."""
        return [q for q in self.items if not (q.key in self.unset and isinstance(q.value, str) and q.value == "???")]


def check_keys(p: Problems, where: str, node: dict, params: dict[str, tuple[Any, Any]], skip=("name",)):
    for k, v in node.items():
        if k in skip:
            continue
        if k not in params:
            p.add(
                f"{where}.{k}",
                "unknown key",
                allowed=", ".join(sorted(params)) or "(no keys)",
                fix=f"remove {where}.{k} or use one of the allowed keys",
            )
            continue
        tp, _ = params[k]
        bad = value_problem(v, tp)
        if bad is not None:
            message, allowed = bad
            p.add(f"{where}.{k}", message, v, allowed=allowed, fix=f"set {where}.{k} to {allowed}")
    for k, (tp, default) in params.items():
        if default is inspect.Parameter.empty:
            if k not in node:
                p.add(f"{where}.{k}", "required key is missing", fix=f"set {where}.{k}=<{type_name(tp)}>")


def check_schema(p: Problems, where: str, node: Any, schema: type) -> dict:
    """Check ``node`` against a dataclass schema; return it with defaults filled in.

    ``where`` is the key prefix ("" for the root). A value with a problem is reported and then
    replaced by the field's default in the result, so that later checks neither crash on it nor
    report it a second time (the config is rejected anyway).
    """
    if not isinstance(node, dict):
        p.add(where, "expected a mapping", node, fix=f"set {where} to a mapping of keys to values")
        return {f.name: f.default for f in dataclasses.fields(schema)}
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema, include_extras=True)
    out = {}
    for k in node:
        if k not in fields:
            key = join_key(where, k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f", or did you mean {join_key(where, close[0])}?" if close else " or fix its spelling"
            p.add(key, "unknown key", allowed=", ".join(fields), fix=f"remove {key}{hint}")
    for name, f in fields.items():
        key = join_key(where, name)
        v = node.get(name, f.default)
        out[name] = v
        bad = value_problem(v, hints[name])
        if bad is not None:
            message, allowed = bad
            allowed = f.metadata.get("allowed") or allowed
            p.add(key, message, v, allowed=allowed, fix=f"set {key} to {allowed}")
            out[name] = f.default
    return out


def check_component(p: Problems, where: str, node: Any, registry: Registry):
    """Check a ``{name: ..., <keys>}`` node against the registered class; return the class."""
    if not isinstance(node, dict) or "name" not in node:
        p.add(
            where,
            f"expected a mapping with a 'name' key naming a {registry.kind}",
            node,
            allowed=", ".join(registry.names()),
            fix=f"choose one with {where.split('.')[0]}=<option>",
        )
        return None
    name = node["name"]
    if name not in registry:
        p.add(
            f"{where}.name",
            f"unknown {registry.kind}",
            name,
            allowed=", ".join(registry.names()),
            fix=f"set {where}.name to one of the allowed names",
        )
        return None
    cls = registry.get(name)
    check_keys(p, where, node, config_params(cls))
    return cls


def component_problems(where: str, node: Any, registry: Registry) -> list[Problem]:
    """Problems of a ``{name: ..., keys}`` node nested in another component's config (for
    example a multi-input architecture's per-input stems), checked like a top-level one."""
    p = Problems()
    check_component(p, where, node, registry)
    return p.items


def check_missing(p: Problems, node: Any, prefix: str = "") -> None:
    """OmegaConf's ??? (mandatory value) left unset anywhere."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_missing(p, v, f"{prefix}.{k}" if prefix else str(k))
    elif node == "???":
        p.add(prefix, "mandatory value is not set", fix=f"set {prefix}=<value> on the command line or in the config")
        p.unset.add(prefix)
