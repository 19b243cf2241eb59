"""Task losses of very different sizes: said in the log, once, at the run's first evaluation.

Under a sum of losses (``weighting=static`` or ``ew``), a task whose loss is orders of magnitude
larger than the others' takes the shared parameters' gradient for itself: a regression target in
grams (MSE around 1e7) beside a classification (cross-entropy around 1) trains the regression alone.
:func:`loss_scale_warning` says so, naming the tasks and their losses, when the largest loss is
more than :data:`RATIO` times the smallest. The losses compared are the ones every weighting
method works on: each task's loss times its ``tasks.<name>.weight`` (the one meaning of a task
weight, a fixed pre-scale), so following the warning's advice and setting a weight silences it.
:func:`warn_loss_scales` logs it. The run's metrics
writer (:class:`mtl_cli.train.rundir.MetricsWriter`) calls it on the first record that holds task
losses (:func:`record_losses`: the first training log interval, or the first evaluation), once per
run (a resumed run whose kept records hold losses was checked when they were written).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

log = logging.getLogger("mtl_cli")

#: the largest task loss over the smallest beyond which the log says so: three orders of magnitude.
#: At two (100), the built-in default run warned (shape's cross-entropy 1.34 beside size's MSE
#: 0.0063 of a radius in image sides, 213x), yet there the warning's advice hurt: with
#: tasks.size.weight=10, size's test MAE moved from 0.0200 to 0.0197 and shape's accuracy fell from
#: 0.93 to 0.73. The case it exists for, a target in its natural units, is off by 1e4 to 1e7.
RATIO = 1000.0


def loss_scale_warning(
    losses: Mapping[str, float], ratio: float = RATIO, weights: Mapping[str, float] | None = None
) -> str | None:
    """The warning for ``losses`` (task -> loss) pre-scaled by ``weights`` (task -> its
    ``tasks.<name>.weight``; 1 where absent), or None when the finite positive scaled losses (a
    task without a label in the split has none) lie within a factor ``ratio`` of each other."""
    weights = weights or {}
    scaled = {t: float(v) * float(weights.get(t, 1.0)) for t, v in losses.items() if v is not None}
    seen = {t: v for t, v in scaled.items() if math.isfinite(v) and v > 0}
    if len(seen) < 2:
        return None
    big = max(seen, key=seen.__getitem__)
    small = min(seen, key=seen.__getitem__)
    factor = seen[big] / seen[small]
    if factor <= ratio:
        return None
    shown = ", ".join(f"{t} {v:.3g}" for t, v in sorted(seen.items(), key=lambda kv: -kv[1]))
    what = "task losses" if all(float(weights.get(t, 1.0)) == 1.0 for t in seen) else "weighted task losses"
    return (
        f"{what} differ by orders of magnitude ({factor:.3g}x between {big} and {small}: {shown}); "
        "the largest dominates the shared layers' gradient and the others may barely train. Standardise "
        "regression targets (csv, school, mulan, image_manifest: data.standardize_targets=true), "
        f"lower tasks.{big}.weight or raise tasks.{small}.weight, or use a weighting that does not depend "
        "on the losses' scales (e.g. weighting=si or weighting=gls)"
    )


def record_losses(record: Mapping[str, object]) -> dict[str, float]:
    """The task losses of a metrics.jsonl record: a training interval's ``loss/<task>`` or an
    evaluation's ``<task>/loss`` (task names hold no ``/``); {} for other records."""
    split = record.get("split")
    if split == "train":
        pairs = [(k[len("loss/") :], v) for k, v in record.items() if k.startswith("loss/")]
    elif split in ("val", "test"):
        pairs = [(k[: -len("/loss")], v) for k, v in record.items() if k.endswith("/loss") and k.count("/") == 1]
    else:
        return {}
    return {t: float(v) for t, v in pairs if isinstance(v, (int, float))}


def task_weights(config: Mapping[str, object] | None) -> dict[str, float]:
    """``tasks.<name>.weight`` of a run's config (a plain dict), for the tasks that set a number."""
    tasks = (config or {}).get("tasks")
    if not isinstance(tasks, Mapping):
        return {}
    return {
        str(t): float(spec["weight"])
        for t, spec in tasks.items()
        if isinstance(spec, Mapping) and isinstance(spec.get("weight"), (int, float))
    }


def warn_loss_scales(
    losses: Mapping[str, float], ratio: float = RATIO, weights: Mapping[str, float] | None = None
) -> str | None:
    """Logs :func:`loss_scale_warning`'s warning when there is one; returns it."""
    text = loss_scale_warning(losses, ratio, weights)
    if text is not None:
        log.warning("%s", text)
    return text
