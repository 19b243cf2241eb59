"""Check mtl-train's command line before Hydra runs anything.

1. Overrides parse (Hydra's grammar); a sweep (``a,b``) needs ``-m``.
2. Every ``group=option`` names an existing option (sweeps: every option, ``glob(...)`` too).
3. Every ``key=value`` names an existing key (``+key=value`` adds one on purpose).
4. For a run (and each job of a small sweep): compose and validate the whole config.

All problems are collected and raised together as one ConfigError.
"""

from __future__ import annotations

import difflib
import os

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config.compose import compose
from ..config.locate import group_options, is_group
from ..config.untrusted import MAX_DEPTH, nesting_depth
from ..errors import ConfigError, Problem, UserError

MAX_JOBS_CHECKED = 32
_MISSING = object()
_COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError)


class _GroupOptions:
    """Stands in for Hydra's config loader when the parser expands ``glob(...)`` sweeps."""

    def get_group_options(self, group: str, results_filter=None, **_) -> list[str]:
        return group_options(group)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).strip().split("\n"))


def _leaf_keys(node, prefix="") -> list[str]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out += [key] + _leaf_keys(v, key)
        return out
    return []


def _yaml_problem(e: yaml.YAMLError) -> Problem:
    """A config file that is not valid YAML (e.g. a task name given twice): name the file and line."""
    mark = getattr(e, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark is not None else "a config file"
    what = getattr(e, "problem", None) or _one_line(e)
    fix = (
        "give each key once (task names, like all keys of a mapping, must be unique)"
        if "duplicate key" in str(what)
        else "fix the YAML syntax at that line"
    )
    return Problem(where, f"invalid YAML: {what}", fix=fix)


def _compose_or_problem(overrides: list[str], where: str, problems: list[Problem]):
    try:
        return compose(overrides)
    except yaml.YAMLError as e:
        problems.append(_yaml_problem(e))
        return None
    except _COMPOSE_ERRORS as e:
        problems.append(Problem(where, _one_line(e), fix="fix or remove that override"))
        return None


def _diagnose_keys(parsed, group_overrides: list[str], problems: list[Problem], skip: tuple[str, ...] = ()) -> None:
    """Name every ``key=value`` override whose key does not exist (with close matches); keys
    under a group in ``skip`` (whose option is unknown) are not judged."""
    base = _compose_or_problem(group_overrides, "command line", problems)
    if base is None:
        return
    keys = _leaf_keys(OmegaConf.to_container(base, resolve=False))
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or o.is_add() or o.is_force_add() or key.startswith("hydra") or is_group(key):
            continue
        if key.split(".")[0] in skip:
            continue
        if OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            problems.append(
                Problem(
                    key,
                    "no such key in the config",
                    o.input_line,
                    allowed=("did you mean " + ", ".join(close)) if close else None,
                    fix=f"check the spelling, or add a new key with +{o.input_line}",
                )
            )


def validate(cfg):
    """..validation.validate, imported on first use: it needs torch, --help and --cfg do not."""
    from ..validation import validate as _validate

    return _validate(cfg)


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


def _rest(parsed, problems: list[Problem]) -> list[str]:
    """The overrides whose key has no problem yet (to check the rest of the command line)."""
    bad = {q.key for q in problems}
    return [o.input_line for o in parsed if o.key_or_group not in bad]


def _isolate(parsed, group_overrides: list[str], problems: list[Problem]) -> None:
    """Name the ``key=value`` overrides that fail on their own (on top of the chosen groups)."""
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or is_group(key):
            continue
        try:
            compose(group_overrides + [o.input_line])
        except _COMPOSE_ERRORS as e:
            problems.append(Problem(key, _one_line(e), o.input_line, fix="fix or remove that override"))


def _group_values(o, key: str, problems: list[Problem]) -> list:
    """The option(s) a ``group=...`` override selects: one, a list, or each value of a sweep."""
    if o.is_sweep_override():
        try:
            values = list(o.sweep_string_iterator())
        except HydraException as e:
            problems.append(
                Problem(
                    key,
                    f"cannot expand this sweep: {_one_line(e)}",
                    o.input_line,
                    fix="sweep over options as a,b or choice(a,b) or glob(pattern)",
                )
            )
            return []
        if not values:
            problems.append(
                Problem(
                    key,
                    "the sweep selects no option",
                    o.input_line,
                    allowed=", ".join(group_options(key)),
                    fix="check the glob pattern",
                )
            )
        return values
    v = o.value()
    return list(v) if isinstance(v, list) else [v]


def _merge_job_problems(found: list[tuple[int, list[str], Problem]], n_jobs: int) -> list[Problem]:
    """One entry per distinct problem, naming the job(s) that have it."""
    merged: dict[tuple, list[tuple[int, list[str], Problem]]] = {}
    for n, job, q in found:
        merged.setdefault((q.key, q.message, repr(q.value), q.allowed, q.fix), []).append((n, job, q))
    out = []
    for jobs in merged.values():
        q = jobs[0][2]
        if len(jobs) == 1:
            where = f"job {jobs[0][0]} ({' '.join(jobs[0][1])})"
        elif len(jobs) == n_jobs:
            where = f"all {n_jobs} jobs"
        else:
            where = "jobs " + ", ".join(str(n) for n, _, _ in jobs)
        out.append(Problem(f"{where}: {q.key}", q.message, q.value, q.allowed, q.fix))
    return out


#: the longest override and the deepest nesting of brackets accepted in one
MAX_OVERRIDE_CHARS = 100_000


def _check_sizes(overrides: list[str]) -> None:
    """Refuse, before parsing, overrides so long or so deeply nested ([[[...]]]) that parsing them
    would exhaust the stack or the memory."""
    problems = []
    for a in overrides:
        key = a.split("=", 1)[0].lstrip("+~") or "command line"
        if len(a) > MAX_OVERRIDE_CHARS:
            problems.append(
                Problem(
                    key,
                    f"an override of {len(a):,} characters, more than the {MAX_OVERRIDE_CHARS:,} accepted",
                    a[:60] + "...",
                    fix="put long values in a config file (--config-dir) instead",
                )
            )
        elif (depth := nesting_depth(a)) > MAX_DEPTH:
            problems.append(
                Problem(
                    key,
                    f"a value nested {depth} levels deep, more than the {MAX_DEPTH} accepted",
                    a[:60] + ("..." if len(a) > 60 else ""),
                    fix="flatten the value; configs are a few levels deep",
                )
            )
    if problems:
        raise ConfigError(problems)


def check_run_start(cfg, run_dir) -> None:
    """The run directory's checks before anything writes into it (Hydra creates it and writes
    .hydra/ there before any of our code runs): refuse a run_dir that cannot be written, that a live
    run holds, or that holds a run without resume/overwrite (train/run.py checks again, under the
    lock); with several processes only rank 0 looks (the others may start after it took the lock)."""
    from ..train.rundir import check_run_dir, check_writable

    check_writable(run_dir)
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        check_run_dir(run_dir, cfg.get("resume"), bool(cfg.get("overwrite", False)), stl=cfg.get("baseline") == "stl")


def precheck(argv: list[str], run_dir_checks: bool = True) -> None:
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    _check_sizes(args.overrides)
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(args.overrides)
    except RecursionError:  # a defence in depth: _check_sizes refuses deep values first
        raise ConfigError([Problem("command line", "an override is nested too deeply to parse")]) from None
    except HydraException as e:
        bad = []
        for a in args.overrides:  # name the override(s) that do not parse
            try:
                parser.parse_overrides([a])
            except HydraException as e1:
                key = a.split("=", 1)[0].lstrip("+~") or "command line"
                bad.append(
                    Problem(
                        key,
                        f"cannot parse this override: {_one_line(e1)}",
                        a,
                        fix="write overrides as key=value; quote values with spaces or brackets",
                    )
                )
        raise ConfigError(bad or [Problem("command line", _one_line(e), fix="write overrides as key=value")]) from e
    loader = _GroupOptions()
    for o in parsed:
        o.config_loader = loader  # glob(...) sweeps list the options of their group through it
    problems: list[Problem] = []
    group_overrides: list[str] = []
    bad_groups: list[str] = []
    for o in parsed:
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra"):
            continue
        if not args.multirun and o.is_sweep_override():
            problems.append(
                Problem(
                    key,
                    "several values (a sweep) need --multirun",
                    o.input_line,
                    fix="add -m (--multirun) for one job per value, or give one value",
                )
            )
            if is_group(key):
                bad_groups.append(key)
            continue
        if is_group(key):
            values = _group_values(o, key, problems)
            options = group_options(key)
            n0 = len(problems)
            for v in values:
                if v is None:
                    problems.append(
                        Problem(
                            key,
                            f"config group '{key}' needs an option",
                            "null",
                            allowed=", ".join(options),
                            fix=f"use {key}=<one of the allowed options>",
                        )
                    )
                elif str(v) not in options:
                    close = difflib.get_close_matches(str(v), options, n=3, cutoff=0.6)
                    problems.append(
                        Problem(
                            key,
                            f"unknown option of config group '{key}'"
                            + (f"; did you mean {' or '.join(close)}?" if close else ""),
                            v,
                            allowed=", ".join(options),
                            fix=(f"use {key}={close[0]}, or " if close else "use ")
                            + f"{key}=<one of the allowed options>",
                        )
                    )
            if values and len(problems) == n0:
                group_overrides.append(f"{o.get_key_element()}={values[0]}")
            elif len(problems) > n0:
                bad_groups.append(key)
    if problems:  # name the bad keys too (against the valid group choices), then stop
        _diagnose_keys(parsed, group_overrides, problems, skip=tuple(bad_groups))
        if not args.multirun and not args.cfg:  # and what is wrong with the rest of the command line
            rest = [
                o for o in _rest(parsed, problems) if o.split("=", 1)[0].lstrip("+~").split(".")[0] not in bad_groups
            ]
            _validate_into(rest, "", problems)
        raise ConfigError(problems)
    if not args.multirun:
        try:  # the common case: one compose, and diagnose only when it fails
            cfg = compose(list(args.overrides))
        except _COMPOSE_ERRORS as e:
            _diagnose_keys(parsed, group_overrides, problems)
            if not problems:
                _isolate(parsed, group_overrides, problems)
            if not problems:
                problems.append(Problem("command line", _one_line(e), fix="fix that override"))
            elif not args.cfg:  # also report what is wrong with the rest of the command line
                _validate_into(_rest(parsed, problems), "", problems)
            raise ConfigError(problems) from e
        if not args.cfg:
            validate(cfg)
            if run_dir_checks:
                check_run_start(cfg, cfg.run_dir)
        return
    _diagnose_keys(parsed, group_overrides, problems)
    if problems or args.cfg:
        if problems:
            raise ConfigError(problems)
        return
    try:
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as e:
        raise ConfigError(
            [Problem("command line", _one_line(e), fix="sweep over lists (a,b), choice(...), range(...) or glob(...)")]
        ) from e
    found: list[tuple[int, list[str], Problem]] = []
    for n, job in enumerate(jobs[:MAX_JOBS_CHECKED]):
        job_problems: list[Problem] = []
        cfg = _compose_or_problem(job, "config", job_problems)
        if cfg is not None:
            try:
                validate(cfg)
            except UserError as e:
                job_problems += e.problems
        found += [(n, job, q) for q in job_problems]
    if found:
        raise ConfigError(_merge_job_problems(found, min(len(jobs), MAX_JOBS_CHECKED)))
