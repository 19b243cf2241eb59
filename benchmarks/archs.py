"""Every registered architecture on the default experiment and on ``experiment=two_inputs``:
parameter count, training time per step and the test metrics of the selected checkpoint, from one
process (the real ``mtl-train`` code path, ``mtl_cli.train.api.train``), one run after another.

    .venv/bin/python benchmarks/archs.py [--experiments default two_inputs] [--archs hps mmoe ...]
                                         [--epochs N] [--threads N]

Each run uses the experiment's own settings (seed 0, its epochs unless ``--epochs``) with only
``arch=<name>`` changed. On two_inputs, ``multi_input`` also runs on each dataset alone (the
other dataset's tasks disabled): with round-robin sampling the joint run gives each dataset as
many steps as it gets alone, so these rows show what sharing across the two datasets does.
An architecture that cannot serve an experiment (a single-input one on two inputs) is listed
with the validation message that refuses it. Other processes' CPU use during each run is recorded
(``foreign_cores``): step times of runs with much contention are not comparable. Results:
benchmarks/results/archs.json (rows of earlier runs kept, a rerun replaces its own) and archs.txt
(the Markdown tables).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, Contention, quiet_logging, run_train, table, wait_for_quiet, write_results  # noqa: E402

# extra rows: (experiment, arch) -> [(label, overrides)]
VARIANTS = {
    ("two_inputs", "multi_input"): [
        ("colour images alone", ["tasks.outline_shape.enabled=false", "tasks.outline_size.enabled=false"]),
        ("outline images alone", ["tasks.shape.enabled=false"]),
        ("one set of batch-norm statistics", ["arch.norm_per_input=false"]),
    ],
}


def run_one(experiment: str, arch: str, epochs: int | None, extra: tuple[str, ...] = (), label: str = "") -> dict:
    from mtl_cli.config.compose import compose
    from mtl_cli.errors import UserError
    from mtl_cli.validation import validate

    overrides = ["trainer.progress=false", f"arch={arch}"]
    if experiment != "default":
        overrides.insert(0, f"experiment={experiment}")
    if epochs is not None:
        overrides.append(f"trainer.max_epochs={epochs}")
    overrides += list(extra)
    cfg = compose(overrides)
    from mtl_cli.config.typecheck import config_params
    from mtl_cli.registry import ARCHS

    extra = [k for k in cfg.arch if k != "name" and k not in config_params(ARCHS.get(arch))]
    if extra:  # keys the experiment sets for its own architecture (e.g. arch.stems): drop them
        overrides += [f"~arch.{k}" for k in extra]
        cfg = compose(overrides)
    try:
        validate(cfg)
    except UserError as e:
        first = e.problems[0]
        return {
            "experiment": experiment,
            "arch": arch,
            "label": label or arch,
            "refused": f"{first.key}: {first.message}",
        }
    wait_for_quiet()
    with Contention() as c:
        t0 = time.perf_counter()
        s = run_train(cfg)
        wall = time.perf_counter() - t0
    return {
        "experiment": experiment,
        "arch": arch,
        "label": label or arch,
        "overrides": overrides,
        "parameters": s["parameters"],
        "total_parameters": sum(s["parameters"].values()),
        "time_per_step_s": s["time_per_step_s"],
        "steps": s["steps"],
        "selected_epoch": s["selected_epoch"],
        "wall_s": wall,
        "foreign_cores": c.foreign_cores,
        "primary": {t: (i["primary_metric"], s["test"][t][i["primary_metric"]]) for t, i in s["tasks"].items()},
        "test": s["test"],
    }


def markdown(results: list[dict], experiment: str) -> str:
    rows_ok = [r for r in results if r["experiment"] == experiment and "refused" not in r]
    refused = [r for r in results if r["experiment"] == experiment and "refused" in r]
    out = []
    if rows_ok:
        metric = {}
        for r in rows_ok:
            for t, (m, _) in r["primary"].items():
                metric.setdefault(t, m)
        tasks = list(metric)
        headers = [
            "arch",
            "parameters",
            "shared",
            "ms/step",
            "steps",
            *[f"{t} {metric[t]}" for t in tasks],
            "other CPU (cores)",
        ]
        rows = []
        for r in rows_ok:
            rows.append(
                [
                    r.get("label", r["arch"]),
                    f"{r['total_parameters']:,}",
                    f"{r['parameters']['shared']:,}",
                    f"{1000 * r['time_per_step_s']:.0f}",
                    r["steps"],
                    *[f"{r['primary'][t][1]:.4f}" if t in r["primary"] else "–" for t in tasks],
                    f"{r['foreign_cores']:.2f}" if r["foreign_cores"] is not None else "n/a",
                ]
            )
        out.append(table(headers, rows))
    if refused:
        out.append("\n".join(f"- `{r['arch']}`: refused at validation ({r['refused']})" for r in refused))
    return "\n\n".join(out)


def main() -> None:
    from mtl_cli.registry import ARCHS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", nargs="+", default=["default", "two_inputs"])
    ap.add_argument("--archs", nargs="+", default=None, help="default: every registered architecture")
    ap.add_argument("--epochs", type=int, default=None, help="default: each experiment's own max_epochs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_logging()
    archs = args.archs or ARCHS.names()
    results = []
    for exp in args.experiments:
        for arch in archs:
            for label, extra in [("", ()), *VARIANTS.get((exp, arch), [])]:
                name = f"{arch} ({label})" if label else arch
                print(f"{exp} / {name} ...", flush=True)
                r = run_one(exp, arch, args.epochs, tuple(extra), name)
                results.append(r)
                msg = r.get("refused") or (
                    f"{r['total_parameters']:,} params, {1000 * r['time_per_step_s']:.0f} ms/step, "
                    f"{r['wall_s']:.0f} s, " + ", ".join(f"{t} {m}={v:.4f}" for t, (m, v) in r["primary"].items())
                )
                print("   ", msg, flush=True)
    # rows of earlier runs (other experiments or architectures) are kept; a rerun replaces its rows
    path = RESULTS / "archs.json"
    old = json.loads(path.read_text())["results"] if path.exists() else []
    new_keys = {(r["experiment"], r.get("label", r["arch"])) for r in results}
    merged = [r for r in old if (r["experiment"], r.get("label", r["arch"])) not in new_keys] + results
    experiments = list(dict.fromkeys(r["experiment"] for r in merged))
    text = "\n\n".join(f"### {exp}\n\n{markdown(merged, exp)}" for exp in experiments)
    print("\n" + text)
    write_results("archs", {"results": merged, "torch_threads": torch.get_num_threads()})
    (RESULTS / "archs.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
