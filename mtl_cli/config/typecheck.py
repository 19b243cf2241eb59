"""Check plain config values against Python type annotations, with readable type names."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Union


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}" if args else "mapping"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    names = {int: "integer", float: "number", bool: "true/false", str: "string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def matches(value: Any, tp: Any) -> bool:
    """Does the plain value (from OmegaConf.to_container) fit the annotation ``tp``?"""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if tp is type(None) or tp is None:
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return all(matches(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(tp)
        return all(matches(k, args[0]) and matches(v, args[1]) for k, v in value.items()) if args else True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def config_params(fn: Callable) -> dict[str, tuple[Any, Any]]:
    """Config keys of a component's ``__init__``: name -> (type, default).

    Positional parameters without a default are context the builder passes (input spec, output
    size, task names...); every other parameter is a config key. Keyword-only parameters without
    a default are required keys.
    """
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError, AttributeError):  # annotations that cannot be evaluated: no type checks
        hints = {}
    out = {}
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            continue
        out[name] = (hints.get(name, Any), p.default)
    return out


def all_params(fn: Callable, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]] | None:
    """Every named parameter of ``fn`` except ``skip``; None if it takes **kwargs (any key)."""
    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError, AttributeError):
        hints = {}
    return {
        n: (hints.get(n, Any), p.default)
        for n, p in sig.parameters.items()
        if n not in skip and n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL,)
    }


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf value} (an empty mapping is a leaf)."""
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: node}
