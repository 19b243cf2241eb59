"""Time to compute the weights from a Gramian alone (the [T, T] solve of a gradient method), at
T = 2, 8, 40 and 128 tasks, for our methods and torchjd's weightings where it has them, with 1 and
2 torch threads, in one process.

    .venv/bin/python benchmarks/solver_time.py [--tasks 2 8 40 128] [--threads 1 2] [--repeats 15]
                                               [--methods upgrad ...] [--no-torchjd] [--out solver_time]

Input: ``G`` [T, 512] float32, Gaussian rows with norms spread over 1..10 plus a common component of
a quarter of the typical norm, so that roughly a third of the pairs conflict (the QP-based methods
have work to do); ``M = G G^T`` in float32, on the CPU (what the engine hands a method when the model
trains in float32). Ours: ``method.gramian_weights(M, rows)`` of a fresh registry instance per
task count (Nash-MTL's warm start is reset before every call). torchjd 0.18 (test-only): its
``*Weighting`` on the same Gramian; NashMTL and ConFIG take the matrix itself (``G``, marked ``*``:
their cost includes products with G). Each cell: the median of ``--repeats`` calls after one
warm-up call. Writes benchmarks/results/<out>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results  # noqa: E402

METHODS = [
    "upgrad",
    "dualproj",
    "mgda",
    "cagrad",
    "nash_mtl",
    "fairgrad",
    "imtl_g",
    "aligned_mtl",
    "conflict_free",
    "pcgrad",
]


def gradients(T: int, P: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(0, 1, T, dtype=torch.float64)[torch.randperm(T, generator=g)]
    common = torch.randn(P, generator=g, dtype=torch.float64) / P**0.5
    rows = torch.randn(T, P, generator=g, dtype=torch.float64) / P**0.5 + 0.25 * common
    return (rows * scale[:, None]).float()


def torchjd_weightings() -> dict:
    """name -> (callable(M, G), takes_matrix); empty when torchjd is missing."""
    try:
        from torchjd import aggregation as A
    except ImportError:
        return {}
    out = {
        "upgrad": (A.UPGradWeighting(), False),
        "dualproj": (A.DualProjWeighting(), False),
        "mgda": (A.MGDAWeighting(), False),
        "cagrad": (A.CAGradWeighting(c=0.4), False),
        "fairgrad": (A.FairGradWeighting(alpha=2.0), False),
        "imtl_g": (A.IMTLGWeighting(), False),
        "aligned_mtl": (A.AlignedMTLWeighting(), False),
        "pcgrad": (A.PCGradWeighting(), False),
        "conflict_free": (A.ConFIG(), True),
    }
    return out


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, nargs="+", default=[2, 8, 40, 128])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--no-torchjd", action="store_true")
    ap.add_argument(
        "--torchjd-max-s", type=float, default=20.0, help="skip a torchjd cell whose first call took longer"
    )
    ap.add_argument("--out", default="solver_time")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from mtl_cli.registry import WEIGHTINGS
    from mtl_cli.weighting.engine import Rows

    ref = {} if args.no_torchjd else torchjd_weightings()
    try:
        from torchjd import aggregation as A
    except ImportError:
        A = None
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for T in args.tasks:
            G = gradients(T)
            M = G @ G.T
            rows = Rows(list(range(T)), torch.ones(T), 0, 0, 1, G.shape[1])
            for name in args.methods:
                method = WEIGHTINGS.get(name)([f"t{i}" for i in range(T)], [1.0] * T)

                def ours(method=method, name=name, M=M, rows=rows):
                    if name == "nash_mtl":
                        method.prev_alpha.fill_(1.0)
                    return method.gramian_weights(M, rows)

                rec = {"method": name, "tasks": T, "threads": threads, "ours_s": _median_time(ours, args.repeats)}
                theirs = ref.get(name)
                if name == "nash_mtl" and A is not None and not args.no_torchjd:
                    theirs = (None, True)
                if theirs is not None:
                    fn, takes_matrix = theirs
                    if name == "nash_mtl":

                        def call(T=T, G=G):
                            return A.NashMTL(n_tasks=T, max_norm=0.0).weighting(G)

                    elif takes_matrix:

                        def call(fn=fn, G=G):
                            return fn(G)

                    else:

                        def call(fn=fn, M=M):
                            return fn(M)

                    t0 = time.perf_counter()
                    try:
                        call()
                        first = time.perf_counter() - t0
                        if first > args.torchjd_max_s:
                            rec["torchjd_s"] = None
                            rec["torchjd_note"] = f"first call {first:.1f} s: not repeated"
                        else:
                            rec["torchjd_s"] = _median_time(
                                call, max(3, args.repeats // 3) if first > 0.5 else args.repeats
                            )
                    except Exception as e:  # noqa: BLE001 - a reference that fails is reported, not fatal
                        rec["torchjd_s"] = None
                        rec["torchjd_note"] = f"{type(e).__name__}: {str(e)[:80]}"
                    rec["torchjd_takes_matrix"] = takes_matrix
                results.append(rec)
                print(
                    f"threads={threads} T={T:4d} {name:14s} ours {rec['ours_s'] * 1e3:9.3f} ms"
                    + (
                        f"  torchjd {rec['torchjd_s'] * 1e3:9.3f} ms"
                        if rec.get("torchjd_s") is not None
                        else f"  torchjd {rec.get('torchjd_note', '-')}"
                    ),
                    flush=True,
                )

    def cell(v):
        if v is None:
            return "-"
        return f"{v * 1e3:.3g}"

    headers = ["method", "threads"] + [f"T={T} ours / torchjd (ms)" for T in args.tasks]
    rows_md = []
    for name in args.methods:
        for threads in args.threads:
            line = [name, threads]
            for T in args.tasks:
                r = next(r for r in results if r["method"] == name and r["tasks"] == T and r["threads"] == threads)
                tj = cell(r.get("torchjd_s")) + ("*" if r.get("torchjd_takes_matrix") else "")
                line.append(f"{cell(r['ours_s'])} / {tj}" if "torchjd_s" in r else f"{cell(r['ours_s'])} / -")
            rows_md.append(line)
    md = table(headers, rows_md)
    print()
    print(md)
    path = write_results(args.out, {"results": results, "table": md, "repeats": args.repeats})
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
