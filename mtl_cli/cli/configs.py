"""``mtl-configs``: see the config groups and their options, and start your own config directory.

    mtl-configs list [group ...]             groups, their options and what each one is
    mtl-configs copy <dest> [group ...]      copy the built-in configs (all, or those groups) to <dest>

``list`` reads the built-in configs and the user's (``--config-dir`` / ``MTL_CONFIG_DIR``, searched
first): each option's description is the first comment line of its file, and ``*`` marks the
option train.yaml chooses by default. ``copy`` never overwrites a file unless ``--force`` is given;
then ``mtl-train --config-dir <dest>`` uses the copies, which replace the built-ins of the same name.
Mistakes end with exit code 2 and a message naming the problem, without traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import sys
from pathlib import Path

from ..config.locate import ENV, builtin_config_dir, group_options, search_dirs
from ..errors import ConfigError, Problem, UserError

PRIMARY = "train.yaml"
_PACKAGE = re.compile(r"#\s*@package\b")
_DEFAULT = re.compile(r"^\s*-\s*(?:override\s+)?([\w/]+)\s*:\s*([\w.-]+|null)\s*(?:#\s*(.*))?$")


def description(path: Path) -> str:
    """The first comment line of a config file (not a ``# @package`` directive), or ''."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        s = line.strip()
        if s.startswith("#") and not _PACKAGE.match(s):
            text = s.lstrip("#").strip()
            if text:
                return text
        elif s and not s.startswith("#"):
            break  # comments after the first key describe keys, not the file
    return ""


def primary_defaults(conf: Path) -> dict[str, tuple[str | None, str]]:
    """group -> (default option or None, the comment of its line) from train.yaml's defaults list."""
    out: dict[str, tuple[str | None, str]] = {}
    for line in (conf / PRIMARY).read_text().splitlines():
        m = _DEFAULT.match(line)
        if m:
            group, option, comment = m.groups()
            out[group] = (None if option == "null" else option, (comment or "").strip())
    return out


def groups() -> list[str]:
    """Every config group (a folder of .yaml files) in the search dirs, sorted."""
    names: set[str] = set()
    for d in search_dirs():
        if d.is_dir():
            names.update(p.name for p in d.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    return sorted(names)


def option_file(group: str, option: str) -> Path | None:
    """The file Hydra would use for ``group=option`` (the first search dir that has it)."""
    for d in search_dirs():
        f = d / group / f"{option}.yaml"
        if f.is_file():
            return f
    return None


def _unknown_groups(names: list[str], known: list[str], verb: str) -> ConfigError:
    def fix(g: str) -> str:
        close = difflib.get_close_matches(g, known, n=1)
        return (f"did you mean {close[0]}? " if close else "") + f"{verb} one of the allowed groups, or none for all"

    return ConfigError([Problem(g, "no such config group", g, allowed=", ".join(known), fix=fix(g)) for g in names])


def list_configs(names: list[str], out=None) -> None:
    out = out or sys.stdout
    known = groups()
    bad = [g for g in names if g not in known]
    if bad:
        raise _unknown_groups(bad, known, "list")
    defaults = primary_defaults(builtin_config_dir())
    user = [str(d) for d in search_dirs()[:-1]]
    lines = ["Config groups and their options: choose with group=option (mtl-train backbone=resnet18)."]
    lines.append("* marks the default; the description is the first comment line of the option's file.")
    if user:
        lines.append(f"User config dirs (searched first): {', '.join(user)}")
    width = max([len(o) for g in (names or known) for o in group_options(g)] + [12]) + 4
    for g in names or known:
        default, comment = defaults.get(g, (None, ""))
        lines.append("")
        lines.append(f"{g}: {comment}" if comment else g)
        for o in group_options(g):
            mark = "*" if o == default else " "
            f = option_file(g, o)
            lines.append(f"  {mark} {o:<{width}}{description(f) if f else ''}".rstrip())
    lines.append("")
    lines.append("Start your own configs from these: mtl-configs copy <dest> [group ...]")
    out.write("\n".join(lines) + "\n")


def _output_error(problems: list[Problem]) -> UserError:
    from ..train.rundir import OutputError  # imports torch: only on this error path

    return OutputError(problems)


def copy_configs(dest: str, names: list[str], force: bool, out=None) -> list[Path]:
    """Copy the built-in configs (every file, or those of the named groups) into ``dest``; returns
    the files written."""
    out = out or sys.stdout
    conf = builtin_config_dir()
    known = sorted(p.name for p in conf.iterdir() if p.is_dir())
    bad = [g for g in names if g not in known]
    if bad:
        raise _unknown_groups(bad, known, "copy")
    target = Path(dest).expanduser()
    if target.exists() and not target.is_dir():
        raise _output_error(
            [
                Problem(
                    "dest",
                    f"{target} is a file, not a folder",
                    dest,
                    fix="choose a folder (it is created if it does not exist)",
                )
            ]
        )
    roots = [conf / g for g in names] if names else [conf]
    files = sorted(f for r in roots for f in r.rglob("*.yaml"))
    pairs = [(f, target / f.relative_to(conf)) for f in files]
    existing = [t for _, t in pairs if t.exists()]
    if existing and not force:
        shown = ", ".join(str(t.relative_to(target)) for t in existing[:8]) + (" ..." if len(existing) > 8 else "")
        raise _output_error(
            [
                Problem(
                    str(target),
                    f"{len(existing)} of the {len(pairs)} files exist already and would be overwritten",
                    shown,
                    fix="copy into an empty folder, name fewer groups, or add --force to overwrite them",
                )
            ]
        )
    try:
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    except OSError as e:
        raise _output_error(
            [
                Problem(
                    str(target),
                    f"cannot write {e.filename or target}: {e.strerror or e}",
                    fix="choose a folder you may write to",
                )
            ]
        ) from e
    what = ", ".join(names) if names else "all groups and train.yaml"
    shown = dest
    overwritten = f", {len(existing)} of them overwritten" if existing else ""
    out.write(
        f"Copied {len(pairs)} config files ({what}{overwritten}) to {target.resolve()}\n"
        f"Use them with:   mtl-train --config-dir {shown} ...\n"
        f"     or:         {ENV}={shown} mtl-train ...\n"
        "Files there replace the built-ins of the same name, and new files add options\n"
        f"(e.g. {shown}/experiment/mine.yaml gives experiment=mine). Delete the copies you do not change,\n"
        "so that they keep following the built-ins.\n"
    )
    return [t for _, t in pairs]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtl-configs",
        description="See mtl-train's config groups and options, or "
        "copy the built-in configs to start your own config directory.",
    )
    sub = p.add_subparsers(dest="command", metavar="{list,copy}")
    ls = sub.add_parser("list", help="config groups, their options and descriptions")
    ls.add_argument("groups", nargs="*", help="only these groups (default: all)")
    ls.add_argument(
        "--config-dir",
        "-cd",
        action="append",
        default=[],
        help="also list your own config directory (searched first, like mtl-train --config-dir)",
    )
    cp = sub.add_parser("copy", help="copy the built-in configs to a folder")
    cp.add_argument("dest", help="the folder to copy into (created if missing)")
    cp.add_argument("groups", nargs="*", help="only these groups (default: every file, train.yaml included)")
    cp.add_argument("--force", action="store_true", help="overwrite files that exist already")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "list":
            missing = [d for d in args.config_dir if not os.path.isdir(d)]
            if missing:
                raise ConfigError(
                    [Problem("--config-dir", "directory not found", d, fix="give an existing folder") for d in missing]
                )
            before = os.environ.get(ENV)
            if args.config_dir:  # searched first, as with mtl-train --config-dir (for this listing only)
                prev = [p for p in (before or "").split(os.pathsep) if p]
                os.environ[ENV] = os.pathsep.join(dict.fromkeys([os.path.abspath(d) for d in args.config_dir] + prev))
            try:
                list_configs(args.groups)
            finally:
                if before is None:
                    os.environ.pop(ENV, None)
                else:
                    os.environ[ENV] = before
        elif args.command == "copy":
            copy_configs(args.dest, args.groups, args.force)
        else:
            _parser().print_help()
            raise SystemExit(2)
    except UserError as e:
        if os.environ.get("MTL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
            raise
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(e.exit_code) from None
    except BrokenPipeError:  # `mtl-configs list | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
