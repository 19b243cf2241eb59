"""Check plain config values against Python type annotations, with readable type names.

An annotation gives a key's type and, through ``Annotated[T, <domain>...]`` and ``Literal`` (see
:mod:`mtl_cli.config.params`), the values it allows. :func:`matches` judges the type only;
:func:`value_problem` the type and the domain, with the message and the allowed values.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Annotated, Any, Callable, Union

from .params import Domain, Len, Range


def _annotated(tp: Any) -> tuple[Any, list[Domain]]:
    """``Annotated[T, d1, d2]`` -> ``(T, [d1, d2])``; any other annotation -> ``(tp, [])``."""
    if typing.get_origin(tp) is Annotated:
        base, *extra = typing.get_args(tp)
        return base, [d for d in extra if isinstance(d, Domain)]
    return tp, []


def type_name(tp: Any) -> str:
    tp = _annotated(tp)[0]
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


def _article(text: str) -> str:
    if text.startswith(("null", "true", "'", "a ", "an ", "list", "mapping")):
        return text
    return ("an " if text[:1] in "aeiou" else "a ") + text


def _plural(text: str) -> str:
    """``an integer >= 1`` -> ``integers >= 1``; ``'a' or 'b'`` stays as it is."""
    for art in ("an ", "a "):
        if text.startswith(art):
            text = text[len(art) :]
    words = text.split(" ", 1)
    if words and words[0] in ("integer", "number", "string", "mapping", "list"):
        words[0] += "s"
    return " ".join(words)


def domain_text(tp: Any) -> str:
    """What ``tp`` allows, for messages: ``an integer >= 1``, ``'loop' or 'batched'``,
    ``null or a number > 0``, ``a list of integers >= 1 with at least 1 item``."""
    base, doms = _annotated(tp)
    origin = typing.get_origin(base)
    extra = " ".join(d.text() for d in doms if d.text())
    if base is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        parts = [domain_text(a) for a in typing.get_args(base)]
        parts = ["null"] + [x for x in parts if x != "null"] if "null" in parts else parts
        text = ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    elif origin is typing.Literal:
        vals = [repr(a) if isinstance(a, str) else str(a).lower() for a in typing.get_args(base)]
        text = ", ".join(vals[:-1]) + " or " + vals[-1] if len(vals) > 1 else vals[0]
    elif origin in (list, tuple, typing.Sequence) or base in (list, tuple):
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        inner = domain_text(args[0]) if args else ""
        text = "a list" + (f" of {_plural(inner)}" if inner else "")
    elif origin is dict or base is dict:
        kv = typing.get_args(base)
        values = domain_text(kv[1]) if len(kv) == 2 and kv[1] is not Any else ""
        text = f"a mapping of names to {_plural(values)}" if values else "a mapping"
    elif base is bool:
        text = "true or false"
    else:
        text = _article(type_name(base))
    return f"{text} {extra}".strip() if extra else text


def _domain_problem(value: Any, tp: Any) -> str | None:
    """Why a value of the right type is outside ``tp``'s domain (None: it is inside)."""
    base, doms = _annotated(tp)
    origin = typing.get_origin(base)
    inner = None
    if origin in (Union, types.UnionType):
        fits = [a for a in typing.get_args(base) if matches(value, a)]
        reasons = [_domain_problem(value, a) for a in fits]
        inner = None if any(r is None for r in reasons) else (reasons[0] if reasons else None)
    elif origin is typing.Literal:
        if value not in typing.get_args(base) or type(value) not in {type(a) for a in typing.get_args(base)}:
            inner = "not one of the allowed values"
    elif origin in (list, tuple, typing.Sequence) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(base) if a is not Ellipsis]
        for i, v in enumerate(value):
            r = _domain_problem(v, args[0]) if args else None
            if r is not None:
                inner = f"item {i} ({v!r}): {r}"
                break
    elif (origin is dict or base is dict) and isinstance(value, dict):
        kv = typing.get_args(base)
        for k, v in value.items():
            r = _domain_problem(v, kv[1]) if kv else None
            if r is not None:
                inner = f"entry {k!r} ({v!r}): {r}"
                break
    if inner is not None:
        return inner
    for d in doms:
        if value is not None and not d.ok(value):
            if isinstance(d, Range):
                return "value out of range"
            if isinstance(d, Len):
                return "wrong number of items"
            return "not an allowed value"
    return None


def value_problem(value: Any, tp: Any) -> tuple[str, str] | None:
    """``(message, allowed values)`` when ``value`` does not fit ``tp`` (its type, then its
    declared domain); None when it fits."""
    if not matches(value, tp):
        return f"wrong type: expected {type_name(tp)}", domain_text(tp)
    bad = _domain_problem(value, tp)
    return (bad, domain_text(tp)) if bad is not None else None


def matches(value: Any, tp: Any) -> bool:
    """Does the plain value (from OmegaConf.to_container) have the type of the annotation ``tp``?
    (Its domain, ``Literal`` values and ``Annotated`` rules, is :func:`value_problem`'s.)"""
    tp = _annotated(tp)[0]
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if tp is type(None) or tp is None:
        return value is None
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:  # the type of its values; which values is the domain's question
        return any(
            type(value) is type(a) or (isinstance(a, float) and matches(value, float)) for a in typing.get_args(tp)
        )
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
        kv = typing.get_args(tp)
        return all(matches(k, kv[0]) and matches(v, kv[1]) for k, v in value.items()) if kv else True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def config_params(obj: Callable) -> dict[str, tuple[Any, Any]]:
    """Config keys of a component (its class, or its ``__init__``): name -> (annotation, default).

    Positional parameters without a default are context the builder passes (input spec, output
    size, task names...); every other parameter is a config key. Keyword-only parameters without
    a default are required keys. An ``__init__`` that takes ``**kwargs`` passes them to its base
    class, whose keys are then keys of the component too (a gradient method's engine keys are
    declared once, on the engine).
    """
    if isinstance(obj, type):
        out: dict[str, tuple[Any, Any]] = {}
        for klass in obj.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            own, more = _init_params(init)
            for k, v in own.items():
                out.setdefault(k, v)
            if not more:
                break
        return out
    return _init_params(obj)[0]


def _hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError, AttributeError):  # annotations that cannot be evaluated: no type checks
        return {}


def _init_params(fn: Callable) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """(config keys of one ``__init__``, whether it takes ``**kwargs``)."""
    sig = inspect.signature(fn)
    hints = _hints(fn)
    out = {}
    more = False
    for name, p in sig.parameters.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            more = True
            continue
        if name == "self" or p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if p.kind is not inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            continue
        out[name] = (hints.get(name, Any), p.default)
    return out, more


def all_params(fn: Callable, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]] | None:
    """Every named parameter of ``fn`` except ``skip``; None if it takes **kwargs (any key)."""
    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    hints = _hints(fn)
    return {
        n: (hints.get(n, Any), p.default)
        for n, p in sig.parameters.items()
        if n not in skip and n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL,)
    }


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf value}. Below the top, an empty mapping is a leaf; at
    the top, anything but a non-empty mapping (an empty or missing config) flattens to nothing."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: node} if prefix else {}
