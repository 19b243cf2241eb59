"""``mtl-report <run or sweep dir>... [--out DIR] [--group-by KEYS] [--metrics all|primary]
[--plots | --no-plots]``: a leaderboard over runs and seeds (mean and std of every test metric,
Δm, time per step and per epoch, peak memory), printed and written as report.csv and report.md,
and PNG plots (training curves, task weights, the Pareto front of two primary tasks)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from pathlib import Path

from .. import report as rp
from ..errors import ConfigError, DataError, Problem, UserError
from ..results.cells import md_cell, md_code

INSTALL = 'pip install "mtl-cli[plots]"'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtl-report",
        description="Leaderboard and plots over mtl-train runs: runs that differ only by seed are grouped, "
        "and every test metric is given as mean ± std over them.",
        epilog="Writes report.csv, report.md and plots/*.png into --out. Exit codes: 0 done (skipped runs are "
        "listed), 2 bad arguments, no finished run, or outputs that cannot be written.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="DIR",
        help="run directories, sweep directories (mtl-train -m), or folders above them",
    )
    p.add_argument("--out", metavar="DIR", help="where report.csv, report.md and plots/ go (default: the first DIR)")
    p.add_argument(
        "--group-by",
        metavar="KEYS",
        help="comma-separated config.yaml keys to group by, e.g. weighting.name,arch.name "
        "(default: the runs' overrides minus seed, run_dir, resume, baseline* and hydra.*)",
    )
    p.add_argument(
        "--metrics",
        choices=("all", "primary"),
        default="all",
        help="all test metrics of every task (default), or each task's primary metric",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--plots",
        dest="plots",
        action="store_true",
        default=None,
        help=f"require the plots (exit 2 when matplotlib is missing: {INSTALL})",
    )
    g.add_argument("--no-plots", dest="plots", action="store_false", help="write no plots")
    return p


def _debugging() -> bool:
    """MTL_DEBUG=1 (or HYDRA_FULL_ERROR=1) shows tracebacks, as for mtl-train."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("MTL_DEBUG", "HYDRA_FULL_ERROR")
    )


def _output_error(path: Path, e: OSError) -> UserError:
    from ..train.rundir import OutputError  # imports torch: only when it is needed

    return OutputError(
        [
            Problem(
                str(path),
                f"cannot write {e.filename or path}: {e.strerror or e}",
                fix="choose a folder you may write to with --out DIR",
            )
        ]
    )


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        raise _output_error(path, e) from e


def report(args: argparse.Namespace) -> None:
    plots_ok = args.plots is not False and _matplotlib()
    if args.plots and not plots_ok:
        raise ConfigError(
            [
                Problem(
                    "--plots",
                    "matplotlib is not installed",
                    "--plots",
                    allowed="--no-plots, or leave both out to skip plots with a note",
                    fix=INSTALL,
                )
            ]
        )
    by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
    if args.group_by is not None and not by:
        raise ConfigError(
            [
                Problem(
                    "--group-by",
                    "no key given",
                    args.group_by,
                    fix="name config keys, e.g. --group-by weighting.name,arch.name",
                )
            ]
        )
    runs, skipped = rp.discover(args.paths)
    if not runs:
        where = ", ".join(args.paths)
        raise DataError(
            [
                Problem(
                    where,
                    f"no finished run found ({len(skipped)} without summary.json)",
                    allowed="run directories holding summary.json, or folders above them",
                    fix="wait for the runs to finish, or give the sweep or run directory"
                    + "".join(f"\n        skipped {s.path}: {s.reason}" for s in skipped),
                )
            ]
        )
    groups = rp.group_runs(runs, by)
    columns = rp.metric_columns(runs, args.metrics)
    rows = rp.aggregate(groups, columns)
    out = Path(args.out) if args.out else Path(args.paths[0])
    if out.is_file():
        out = out.parent

    has_dm = any(r.stats[rp.DELTA_M].mean is not None for r in rows)
    monitors = sorted({m for r in rows for m in r.monitors})
    order = "Δm (test)" if has_dm else f"objective ({', '.join(monitors) or 'not recorded'})"
    kinds = sorted({k for r in rows for k in r.memory_kinds})
    head = (
        f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {len(rows)} group{'s' if len(rows) != 1 else ''}"
        f", {len(skipped)} skipped; test split, mean ± std over seeds; sorted by {order}"
    )
    common = rp.common_items(groups) if by is None else []
    notes = [f"shared by all runs: {' '.join(common)}"] if common else []
    if kinds:
        notes.append(f"peak memory: {', '.join(kinds)}")
    skipped_lines = [f"  - {s.path}: {s.reason}" for s in skipped]

    width = console_width()
    print(head)
    for n in notes:
        print(textwrap.fill(n, width, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False))
    print()
    print(rp.to_text(rows, columns, width))
    if skipped:
        print(f"\nskipped {len(skipped)}:")
        print("\n".join(skipped_lines))

    # text from the runs (override values, monitor names, paths, error messages) is escaped: no
    # line break, raw HTML or code-span end gets through into report.md
    md_notes = [f"- shared by all runs: {md_code(' '.join(common))}"] if common else []
    md_notes += [f"- peak memory: {md_cell(', '.join(kinds))}"] if kinds else []
    md_head = md_cell(head) + "."
    md = ["# mtl-report", "", md_head, "", *md_notes, *([""] if md_notes else []), rp.to_markdown(rows, columns), ""]
    if skipped:
        md += [f"Skipped ({len(skipped)}):", "", *[f"- {md_code(s.path)}: {md_cell(s.reason)}" for s in skipped], ""]
    _write(out / "report.csv", rp.to_csv(rows, columns))
    _write(out / "report.md", "\n".join(md))
    written = [out / "report.csv", out / "report.md"]
    if plots_ok:
        from ..report.plots import write_plots

        try:
            written += write_plots(rows, out / "plots")
        except OSError as e:
            raise _output_error(out / "plots", e) from e
    elif args.plots is None:
        print(f"\nplots skipped: matplotlib is not installed ({INSTALL})")
    print(
        f"\nwrote {len(written)} file{'s' if len(written) != 1 else ''} to {out}: "
        + ", ".join(str(p.relative_to(out)) for p in written)
    )


#: the console table's width when the output is not a terminal (and COLUMNS is not set)
DEFAULT_WIDTH = 100


def console_width() -> int:
    """The terminal's width (or COLUMNS), else :data:`DEFAULT_WIDTH`: wider tables are wrapped."""
    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def _matplotlib() -> bool:
    from ..report.plots import matplotlib_available

    return matplotlib_available()


def main(argv: list[str] | None = None) -> None:
    """Returns normally when done (exit 0); raises SystemExit(2) for a UserError (message, no
    traceback unless MTL_DEBUG=1) and argparse's SystemExit(2) for bad arguments."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report(args)
    except UserError as e:
        if _debugging():
            raise
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(e.exit_code) from None
    except BrokenPipeError:  # `mtl-report ... | head`: the reader left, nothing is wrong
        sys.stderr.close()


if __name__ == "__main__":
    main()
