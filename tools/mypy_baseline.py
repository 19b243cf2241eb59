#!/usr/bin/env python3
"""mypy error counts that only go down.

Runs mypy on mtl_cli (configured in pyproject.toml's ``[tool.mypy]``), counts its errors per file
(and per error code, for the record) and compares the per-file counts with the committed
``tools/mypy-baseline.json``:

- a file with more errors than its baseline count, or a file with errors that the baseline does not
  list: listed, exit 1;
- otherwise exit 0, and the files whose count went down are listed: lower the baseline with
  ``python tools/mypy_baseline.py --update`` and commit tools/mypy-baseline.json.

``--update`` rewrites the baseline with today's counts, and refuses (exit 1) when that would raise the
count of any file unless ``--allow-increase`` is given (e.g. for a file that moved: its errors
appear under the new path). The gate is the per-file total; the per-code counts may shift within a file
whose total does not rise.

``--output FILE`` reads mypy's output from FILE instead of running it (``-`` for stdin).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "tools" / "mypy-baseline.json"
TARGETS = ["mtl_cli"]

# path:line[:column]: error: message  [code]
_ERROR = re.compile(
    r"^(?P<file>[^:\n]+?):(?P<line>\d+)(?::\d+)?: error: (?P<msg>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?\s*$"
)

Counts = dict[str, Counter[str]]  # file -> error code -> count


def parse(output: str) -> Counts:
    """Per file (posix path as mypy prints it), the number of errors per error code ("unknown"
    when mypy gives none). Notes and the summary line are not counted."""
    counts: Counts = {}
    for line in output.splitlines():
        m = _ERROR.match(line)
        if m:
            file = m["file"].replace("\\", "/")
            counts.setdefault(file, Counter())[m["code"] or "unknown"] += 1
    return counts


def totals(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    return {file: sum(codes.values()) for file, codes in counts.items() if sum(codes.values())}


@dataclass
class Diff:
    up: dict[str, tuple[int, int]] = field(default_factory=dict)  # file -> (baseline, now); baseline 0: new
    down: dict[str, tuple[int, int]] = field(default_factory=dict)  # now 0: fixed, or the file is gone

    @property
    def ok(self) -> bool:
        return not self.up


def compare(baseline: Mapping[str, int], current: Mapping[str, int]) -> Diff:
    """Per-file error totals of the baseline against today's."""
    diff = Diff()
    for file in sorted(set(baseline) | set(current)):
        old, new = baseline.get(file, 0), current.get(file, 0)
        if new > old:
            diff.up[file] = (old, new)
        elif new < old:
            diff.down[file] = (old, new)
    return diff


class IncreaseRefused(Exception):
    """``--update`` would raise a count of the baseline."""

    def __init__(self, diff: Diff):
        super().__init__(f"{len(diff.up)} file(s) would get a higher count")
        self.diff = diff


def document(counts: Counts, mypy_version: str) -> dict[str, Any]:
    """The baseline JSON for ``counts``."""
    files = {
        file: {"total": sum(codes.values()), "codes": dict(sorted(codes.items()))}
        for file, codes in sorted(counts.items())
        if sum(codes.values())
    }
    by_code: Counter[str] = Counter()
    for codes in counts.values():
        by_code.update(codes)
    return {
        "comment": "mypy error counts of mtl_cli that may only go down: see docs/quality.md",
        "mypy": mypy_version,
        "total": sum(by_code.values()),
        "codes": dict(sorted(by_code.items())),
        "files": files,
    }


def baseline_totals(doc: Mapping[str, Any]) -> dict[str, int]:
    return {file: int(entry["total"]) for file, entry in doc.get("files", {}).items()}


def updated(doc: Mapping[str, Any], counts: Counts, mypy_version: str, allow_increase: bool = False) -> dict[str, Any]:
    """The baseline that replaces ``doc`` with ``counts``; raises IncreaseRefused when a file's count
    would go up, unless ``allow_increase``."""
    diff = compare(baseline_totals(doc), totals(counts))
    if diff.up and not allow_increase:
        raise IncreaseRefused(diff)
    return document(counts, mypy_version)


def run_mypy() -> tuple[str, str, float]:
    """mypy's output on TARGETS, its version and the seconds it took."""
    try:
        import mypy.version
    except ImportError:
        sys.exit('mypy_baseline: mypy is not installed here: pip install -e ".[lint]"')
    cmd = [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"]
    cmd += ["--no-pretty", "--no-color-output", "--show-error-codes", "--no-error-summary", *TARGETS]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode not in (0, 1):  # 2: mypy could not run (bad config, syntax error, crash)
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"mypy_baseline: mypy failed (exit {proc.returncode}): {' '.join(cmd)}")
    return proc.stdout, mypy.version.__version__, seconds


def _show(rows: Mapping[str, tuple[int, int]], counts: Counts, doc: Mapping[str, Any]) -> None:
    for file, (old, new) in rows.items():
        was = doc.get("files", {}).get(file, {}).get("codes", {})
        now = counts.get(file, Counter())
        codes = ", ".join(
            f"{c} {was.get(c, 0)}->{now.get(c, 0)}"
            for c in sorted(set(was) | set(now))
            if was.get(c, 0) != now.get(c, 0)
        )
        print(f"  {file}: {old} -> {new}" + (f"  ({codes})" if codes else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="rewrite the baseline with today's counts (lower only)")
    ap.add_argument("--allow-increase", action="store_true", help="with --update: accept higher counts too")
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--output", help="read mypy's output from this file ('-': stdin) instead of running mypy")
    args = ap.parse_args(argv)

    if args.output is not None:
        text = sys.stdin.read() if args.output == "-" else Path(args.output).read_text(encoding="utf-8")
        version, seconds = "", 0.0
    else:
        text, version, seconds = run_mypy()
    counts = parse(text)
    doc = json.loads(args.baseline.read_text(encoding="utf-8")) if args.baseline.exists() else {}
    now_total = sum(totals(counts).values())
    if version and doc.get("mypy") and doc["mypy"] != version:
        print(f"mypy_baseline: note: the baseline was counted with mypy {doc['mypy']}, this is mypy {version}")

    if args.update:
        try:  # a first baseline has nothing to raise
            new = updated(doc, counts, version or doc.get("mypy", ""), args.allow_increase or not doc)
        except IncreaseRefused as e:
            print("mypy_baseline: --update refused: these counts would go up (fix them, or --allow-increase):")
            _show(e.diff.up, counts, doc)
            return 1
        args.baseline.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
        print(f"mypy_baseline: wrote {args.baseline.name}: {new['total']} errors in {len(new['files'])} files")
        return 0

    if not doc:
        print(f"mypy_baseline: no baseline at {args.baseline}: create it with --update")
        return 1
    diff = compare(baseline_totals(doc), totals(counts))
    took = f" (mypy took {seconds:.1f} s)" if seconds else ""
    if diff.up:
        print(f"mypy_baseline: FAILED: more mypy errors than {args.baseline.name} allows{took}:")
        _show(diff.up, counts, doc)
        print("Fix them (python -m mypy lists them all). For a file that only moved, the errors go with it:")
        print("python tools/mypy_baseline.py --update --allow-increase")
        return 1
    print(f"mypy_baseline: ok: {now_total} errors, baseline {doc.get('total', 0)}{took}")
    if diff.down:
        print("Fewer errors than the baseline in:")
        _show(diff.down, counts, doc)
        print("Lower the baseline: python tools/mypy_baseline.py --update, and commit tools/mypy-baseline.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
