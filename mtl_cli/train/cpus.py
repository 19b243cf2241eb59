"""The CPUs a run may use: its thread count (``mtl-train``) and ``trainer.num_workers=auto`` read
them. No torch import here: ``mtl-train --help`` stays fast."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: taskset, cgroups' cpusets, Slurm's binding)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)
