"""Run by ``torchrun`` (tests/test_distributed.py): every process joins the gloo group and trains
the runs of a JSON spec in turn, into the same run directories; rank 0 writes, per run, the bytes
each kind of collective moved. Usage: ``dist_worker.py <spec.json>`` with
``{"base": [overrides], "runs": {"name": [overrides]}, "out": "<dir>"}`` and optionally
``"rank_overrides": {"<rank>": [overrides]}`` (one process given other settings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mtl_cli.config.compose import compose
from mtl_cli.errors import UserError
from mtl_cli.train import distributed
from mtl_cli.train.api import train


def main(spec_path: str) -> int:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    comm = distributed.setup("gloo", 120)
    out, report = Path(spec["out"]), {}
    for name, extra in spec["runs"].items():
        before = dict(comm.bytes)
        mine = spec.get("rank_overrides", {}).get(str(comm.rank), [])  # a test of mismatched configs
        try:
            summary = train(compose(spec["base"] + extra + mine), out / name)
            steps, error = summary["steps"], None
        except UserError as e:
            steps, error = 0, {"type": type(e).__name__, "message": e.render(), "exit_code": e.exit_code}
        report[name] = {
            "steps": steps,
            "error": error,
            "bytes": {k: v - before.get(k, 0) for k, v in comm.bytes.items() if v != before.get(k, 0)},
        }
    if comm.is_main:
        (out / "report.json").write_text(json.dumps(report, indent=1))
    distributed.teardown()
    return 0


if __name__ == "__main__":
    with distributed.leaving_cleanly():  # as mtl-train's processes end (see its docstring)
        raise SystemExit(main(sys.argv[1]))
