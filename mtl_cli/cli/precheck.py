"""Check mtl-train's command line before Hydra runs anything.

1. Overrides parse (Hydra's grammar).
2. Every ``group=option`` names an existing option (sweeps: every option).
3. Every ``key=value`` names an existing key (``+key=value`` adds one on purpose).
4. For a run (and each job of a small sweep): compose and validate the whole config.

All problems are collected and raised together as one ConfigError.
"""

from __future__ import annotations

import difflib

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config.compose import compose
from ..config.locate import group_options, is_group
from ..config.validate import validate
from ..errors import ConfigError, Problem, UserError

MAX_JOBS_CHECKED = 32
_MISSING = object()


def _leaf_keys(node, prefix="") -> list[str]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out += [key] + _leaf_keys(v, key)
        return out
    return []


def _compose_or_problem(overrides: list[str], where: str, problems: list[Problem]):
    try:
        return compose(overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        problems.append(Problem(where, str(e).strip().replace("\n", " "), fix="fix or remove that override"))
        return None


def _diagnose_keys(parsed, group_overrides: list[str], problems: list[Problem]) -> None:
    """Name every ``key=value`` override whose key does not exist (with close matches)."""
    base = _compose_or_problem(group_overrides, "command line", problems)
    if base is None:
        return
    keys = _leaf_keys(OmegaConf.to_container(base, resolve=False))
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or o.is_add() or o.is_force_add() or key.startswith("hydra") or is_group(key):
            continue
        if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            problems.append(Problem(key, "no such key in the config", o.input_line,
                                    allowed=("did you mean " + ", ".join(close)) if close else None,
                                    fix=f"check the spelling, or add a new key with +{o.input_line}"))


def _validate_into(overrides: list[str], where: str, problems: list[Problem]) -> None:
    """Compose ``overrides`` and validate; add what is wrong to ``problems`` (keys prefixed)."""
    cfg = _compose_or_problem(overrides, where or "command line", problems)
    if cfg is None:
        return
    try:
        validate(cfg)
    except UserError as e:
        for q in e.problems:
            problems.append(Problem(f"{where}: {q.key}" if where else q.key, q.message, q.value, q.allowed, q.fix))


def precheck(argv: list[str]) -> None:
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as e:
        raise ConfigError([Problem("command line", str(e).strip(), fix="write overrides as key=value")])
    problems: list[Problem] = []
    group_overrides = []
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra"):
            continue
        if is_group(key):
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            options = group_options(key)
            for v in values:
                if v is not None and str(v) not in options:
                    problems.append(Problem(key, f"unknown option of config group '{key}'", v,
                                            allowed=", ".join(options), fix=f"use {key}=<one of the allowed options>"))
            group_overrides.append(f"{o.get_key_element()}={values[0]}" if values[0] is not None else o.input_line)
    if problems:
        raise ConfigError(problems)
    if not args.multirun:
        try:  # the common case: one compose, and diagnose only when it fails
            cfg = compose(list(args.overrides))
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            _diagnose_keys(parsed, group_overrides, problems)
            if not problems:
                problems.append(Problem("command line", str(e).strip().replace("\n", " "), fix="fix that override"))
            else:  # also report what is wrong with the rest of the command line
                bad = {q.key for q in problems}
                rest = [o.input_line for o in parsed if o.key_or_group not in bad]
                _validate_into(rest, "", problems)
            raise ConfigError(problems)
        if not args.cfg:
            validate(cfg)
        return
    _diagnose_keys(parsed, group_overrides, problems)
    if problems or args.cfg:
        if problems:
            raise ConfigError(problems)
        return
    jobs = BasicSweeper.split_arguments(parsed, None)[0]
    for n, job in enumerate(jobs[:MAX_JOBS_CHECKED]):
        _validate_into(job, f"job {n} ({' '.join(job)})", problems)
    if problems:
        raise ConfigError(problems)
